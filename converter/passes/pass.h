// The pass interface: a pass is a small object with a name, the calibration statistics it
// needs, and one Run() over the model draft. Passes never print; they record what they did in
// their JSON record (kept in kvfold.json and the report).
#pragma once

#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "calib/kv_statistics.h"
#include "calib/output_refit_moments.h"
#include "converter/passes/model_draft.h"

namespace kvfold {

struct PassContext {
  ModelDraft& model;
  const KvStatistics& statistics;  // from the calibration forward of the source model
  nlohmann::ordered_json& record;  // the pass adds what it did (deterministic values only)
};

// What a layer-local pass reads and writes of one layer.
struct LayerPassContext {
  ModelDraft& model;
  int layer;
  const LayerKvStatistics& statistics;  // this layer's (empty when the pipeline needs none)
  std::int64_t statistics_kv_heads;     // the KV heads those statistics describe
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
  // Why what this pass writes cannot be stored as `format` (converter/export), with what to do
  // instead; "" when it can. Convert asks before any work.
  virtual std::string Unexportable(OutputFormat /*format*/) const { return ""; }
};

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
  // Passes that choose a setting per layer from every layer's measurements before any layer is
  // rewritten (gqa-svd<kv-heads=auto>): the statistics they measure on (0: none), then one
  // MeasureLayer per layer from a sweep of the source, in layer order, then Allocate.
  virtual unsigned AllocationStatistics() const { return 0; }
  virtual void MeasureLayer(const ModelDraft& /*model*/, int /*layer*/,
                            const LayerKvStatistics& /*statistics*/) {}
  virtual void Allocate() {}
};

// A pass invocation as written in a pipeline: name<key=value,...>.
struct PassSpec {
  std::string name;
  std::map<std::string, std::string> params;  // as written
  // Values the parameter helpers below fell back to when a parameter was not written. A pass
  // reads every parameter when it is created, so afterwards Text() names every value in force:
  // kvfold.json then reproduces its output even after a default changes.
  mutable std::map<std::string, std::string> defaults_used;
  std::string Text() const;  // canonical text: written and defaulted parameters, sorted
};

struct PassParam {
  const char* name;
  const char* help;  // includes the allowed values and the default
};

struct PassInfo {
  const char* name;
  const char* summary;
  std::vector<PassParam> params;
  std::unique_ptr<Pass> (*create)(const PassSpec& spec, const ModelConfig& config);
};

// Every pass kvfold has (converter/passes/pass_registry.cc).
const std::vector<PassInfo>& PassRegistry();
std::string PrintPasses();

// Parses 'a<k=v,k2=v2>,b' into specs; checks pass and parameter names against the registry.
// Throws Error("--passes: ...") naming the unknown pass or parameter.
std::vector<PassSpec> ParsePipeline(const std::string& text);

// Integer parameter helper for pass constructors: Error naming the pass and parameter.
std::int64_t IntParam(const PassSpec& spec, const std::string& key, std::int64_t fallback);
// A list parameter written protect=0,1: its distinct integers in order (empty when absent or
// written as "none", the canonical empty list).
std::vector<std::int64_t> IntListParam(const PassSpec& spec, const std::string& key);
// Refuses a pass whose output holds one KV-head count for every layer on a model whose layers
// differ (Nemotron-NAS / DeciLM): Error("--passes: <pass>: ...").
void RequireUniformKvHeads(const ModelConfig& config, const std::string& pass,
                           const std::string& what);
double DoubleParam(const PassSpec& spec, const std::string& key, double fallback);
std::string StringParam(const PassSpec& spec, const std::string& key, const std::string& fallback,
                        const std::vector<std::string>& allowed);

}  // namespace kvfold
