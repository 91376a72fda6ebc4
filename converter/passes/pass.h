// The pass interface: a pass is a small object with a name, the calibration statistics it
// needs, and one Run() over the model draft. Passes never print; they record what they did in
// their JSON record (kept in kvfold.json and the report).
#pragma once

#include <functional>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <set>
#include <string>
#include <vector>

#include "calib/kv_statistics.h"
#include "calib/layer_heal.h"
#include "calib/output_refit_moments.h"
#include "converter/passes/gqa_fold.h"
#include "converter/passes/model_draft.h"

namespace kvfold {

struct PassContext {
  ModelDraft& model;
  const KvStatistics& statistics;  // from the calibration forward of the source model
  nlohmann::ordered_json& record;  // the pass adds what it did (deterministic values only)
};

// Trains a layer's attention projections in place (biases as the last column) against the
// source layer on the inputs captured before any pass rewrote it; the converted sweep supplies
// it (LibTorch's autograd, runtime_check/attention_heal.h).
using HealAttentionFn = std::function<HealOutcome(AttentionProjections&, const HealSettings&)>;

// What a layer-local pass reads and writes of one layer.
struct LayerPassContext {
  ModelDraft& model;
  int layer;
  const LayerKvStatistics& statistics;    // this layer's (empty when the pipeline needs none)
  std::int64_t statistics_kv_heads;       // the KV heads those statistics describe
  const HealAttentionFn* heal = nullptr;  // only in the converted sweep of a pipeline that heals
  // Threads the pass may spread its own math over (ParallelItems), BLAS held to one thread
  // meanwhile: --threads in the layer loop, 1 elsewhere.
  int threads = 1;
};

class Pass {
 public:
  virtual ~Pass() = default;
  virtual unsigned NeededStatistics() const = 0;  // StatisticBits
  virtual void Run(PassContext& context) = 0;
  // Rewrites the q/k/v/o projections or the KV layout: statistics of the source no longer
  // describe the draft after it.
  virtual bool ChangesKv() const { return false; }
  // Writes numbers tied to the draft's K/V (scales, tables): nothing may change K/V after it.
  virtual bool DescribesKv() const { return false; }
  // kStatLayerInputs: the layer pairs whose attention-input cross moments the pass reads.
  virtual std::vector<LayerPair> InputPairs() const { return {}; }
  // Layer-local passes (LayerPass) touch only layer l's tensors and statistics for layer l.
  virtual bool LayerLocal() const { return false; }
  // KV-head passes: the number of KV heads they leave; 0 for every other pass.
  virtual std::int64_t KvHeadsAfter() const { return 0; }
  // Cross-layer passes: the layer each layer reads K/V from after them (ModelConfig::kv_layer_of);
  // empty for every other pass.
  virtual std::vector<std::int64_t> KvLayoutAfter() const { return {}; }
  // Why what this pass writes cannot be stored as `format` (converter/export), with what to do
  // instead; "" when it can. Convert asks before any work.
  virtual std::string Unexportable(OutputFormat /*format*/) const { return ""; }
  // Why this pass cannot run on a model that `config` describes (its architecture, and what
  // earlier passes made of it), saying what applies instead; "" when it can. The one answer for
  // the pipeline (before any work), the planner (before it offers a candidate) and the pass
  // itself (RequireSupported, on the draft as the pass reaches it).
  virtual std::string Unsupported(const ModelConfig& /*config*/) const { return ""; }
};

// Error("--passes: <name>: <why>") when `pass` cannot run on `config` (Pass::Unsupported).
void RequireSupported(const Pass& pass, const std::string& name, const ModelConfig& config);

// A pass whose work on layer l reads and writes only layer l's tensors and statistics
// (RunLayer), and which changes the config and fills its record once, after every layer
// (Finish). The converter can then run it layer by layer inside the calibration sweep and free
// each layer's statistics and replaced tensors as it goes; Run() does the same in one call.
class LayerPass : public Pass {
 public:
  bool LayerLocal() const final { return true; }
  void Run(PassContext& context) final;
  virtual void RunLayer(LayerPassContext& context) = 0;
  virtual void Finish(PassContext& context) = 0;
  // Refits o_proj against the layer as it was before RunLayer (gqa-svd<refit=o>): only the
  // converted sweep can, by running the layer before and after RunLayer on the same hidden
  // states and handing the context moments to RefitLayer.
  virtual bool RefitsOutput() const { return false; }
  virtual void DisableRefit() {}
  virtual void RefitLayer(LayerPassContext& /*context*/, const OutputRefitMoments& /*moments*/) {}
  // Passes that train the layer (heal): their settings; the converted sweep then captures
  // each layer's inputs and the source layer's attention before the pipeline touches it.
  virtual const HealSettings* Heals() const { return nullptr; }
  // Passes that choose a setting per layer from every layer's measurements before any layer is
  // rewritten (gqa-svd<kv-heads=auto>): the statistics they measure on (0: none), then one
  // MeasureLayer per layer from a sweep of the source, in layer order, then Allocate.
  virtual unsigned AllocationStatistics() const { return 0; }
  virtual void MeasureLayer(const ModelDraft& /*model*/, int /*layer*/,
                            const LayerKvStatistics& /*statistics*/) {}
  virtual void Allocate() {}
};

// One parameter of a pass, declared once in the registry: its type, default, allowed values
// and the condition under which it applies drive parsing, validation, the canonical text and
// --print-passes (converter/passes/pipeline.cc). Passes read checked values only.
enum class ParamType {
  kInt,      // an integer
  kNumber,   // a decimal number
  kChoice,   // one of `words`
  kIntList,  // integers separated by commas (kv-heads=8,4,4,2)
  kIntSet,   // distinct integers separated by commas, or none (protect=0,1)
};

struct PassParam {
  const char* name;
  ParamType type;
  const char* help;  // what it means; the type, the choices and the default are added from here
  // The value in force when the pipeline does not write one; nullptr: none (then the parameter
  // is required wherever it applies, unless default_from names another parameter).
  const char* default_value = nullptr;
  std::vector<std::string> words = {};  // kChoice: the values; other types: words also allowed
  const char* default_from = nullptr;   // the default is this parameter's value (key-bits: bits)
  // "key=value": the parameter applies only when that parameter has that value (ridge applies
  // with refit=o); written otherwise it is refused, and its default is in force only then.
  const char* when = nullptr;
};

// A pass invocation with every parameter in force, checked against its registry entry: what a
// pipeline holds between the command line (or kvfold.json) and the passes. Built only by
// MakePassSpec / ParsePipeline.
struct PassSpec {
  std::string name;
  std::map<std::string, std::string> values;  // parameter -> canonical value, defaults included
  std::set<std::string> written;              // the parameters the pipeline wrote
  // Canonical text: every value in force, sorted. Parsing it gives the same spec (kvfold.json
  // then reproduces an output even after a default changes).
  std::string Text() const;
  bool Has(const std::string& key) const { return values.count(key) != 0; }
  const std::string& Get(const std::string& key) const;
  std::int64_t Int(const std::string& key) const;
  double Number(const std::string& key) const;
  std::vector<std::int64_t> IntList(const std::string& key) const;  // kIntSet "none": empty
};

// A pipeline as a value: the passes in order. Serialised (PipelineText) only where it leaves
// the program: kvfold.json, the report, the plan's JSON and table, the command line.
using PipelineSpec = std::vector<PassSpec>;

struct PassInfo {
  const char* name;
  const char* summary;
  std::vector<PassParam> params;
  std::unique_ptr<Pass> (*create)(const PassSpec& spec, const ModelConfig& config);
};

// Every pass kvfold has (converter/passes/pass_registry.cc).
const std::vector<PassInfo>& PassRegistry();
// The listing of --print-passes, from the registry's schemas.
std::string PrintPasses();

// `name` with the parameters `written` (name -> value text): each checked against its type and
// condition, the defaults of the rest filled in. Throws Error("--passes: <name>: ...") naming
// the unknown pass or parameter, the bad value, or the missing required parameter.
PassSpec MakePassSpec(const std::string& name,
                      const std::map<std::string, std::string>& written = {});
// The pass `spec` names, made for a model `config` describes (its parameters checked against it;
// whether it supports the model is Pass::Unsupported's answer).
std::unique_ptr<Pass> CreatePass(const PassSpec& spec, const ModelConfig& config);
// Parses 'a<k=v,k2=v2>,b' into specs (MakePassSpec each). Throws Error("--passes: ...").
PipelineSpec ParsePipeline(const std::string& text);
std::string PipelineText(const PipelineSpec& pipeline);  // "" for no passes
// `pipeline` followed by `pass` (e.g. kv-scales after a structure).
PipelineSpec Then(PipelineSpec pipeline, PassSpec pass);

// Why a pass whose output holds one KV-head count for every layer cannot run on a model whose
// layers differ (Nemotron-NAS / DeciLM): "<what> one KV-head count ..."; "" when they do not.
std::string NonUniformKvHeads(const ModelConfig& config, const std::string& what);

}  // namespace kvfold
