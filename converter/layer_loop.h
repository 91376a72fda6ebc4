// The layer loop of `kvfold convert`: the pipeline's passes, the calibration sweep that feeds
// them, and the order in which the two meet. docs/design.md ("The layer sweep") has the picture.
//
// Three ways to run a pipeline, chosen by RunPasses:
//  - converted (the default for layer-local pipelines): for each layer, statistics of the layer
//    as it stands are collected on the hidden states the *converted* layers below produce, each
//    pass rewrites the layer (statistics are collected again after a pass that changed K/V), the
//    layer is sealed in its output dtype, the hidden states advance through it as written, and
//    it goes to the draft's open output (ModelDraft::WriteLayer);
//  - source, layer-local: the source model's sweep hands each layer's statistics to the passes
//    as soon as every batch passed it (the numbers kvfold wrote before the converted mode), and
//    the layer is written;
//  - whole model: calibrate every layer of the source, then run pass after pass (cross-layer
//    and table passes, which read several layers at once); heal passes at the end of such a
//    pipeline (mlkv<...>,heal) then run in a converted sweep of their own over the draft, each
//    layer trained against the source checkpoint's layer on the converted hidden states.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "calib/kv_statistics.h"
#include "calib/windows.h"
#include "converter/convert.h"
#include "converter/passes/model_draft.h"
#include "converter/passes/pass.h"
#include "formats/checkpoint.h"
#include "runtime_check/reference_model.h"

namespace kvfold {

// The passes of a pipeline, created against the source's config before any work: the schema
// has checked each parameter's type (MakePassSpec); what depends on the model (a count that
// must divide the KV heads, a layer that must exist) is checked here.
struct Pipeline {
  PipelineSpec specs;
  std::vector<std::unique_ptr<Pass>> passes;
  unsigned needed = 0;                 // StatisticBits
  std::vector<LayerPair> input_pairs;  // kStatLayerInputs
  std::string Text() const;
  // Every pass is layer-local: the pipeline can run one layer at a time.
  bool LayerLocal() const;
};

Pipeline CreatePipeline(const PipelineSpec& specs, const ModelConfig& config);

// Refuses orders whose numbers would describe a model that no longer exists; with
// `recalibrates` (the converted mode), statistics are collected again after a K/V change, so a
// calibrated pass may follow one.
void CheckPassOrder(const Pipeline& p, bool recalibrates);

// Spectra need all three second moments; a report asks calibration for them.
constexpr unsigned kReportStatistics = kStatValue | kStatKeyPreRope | kStatKeyPostRope;

// Whether `o` runs `p` in the converted mode.
bool CalibratesOnConverted(const Pipeline& p, const ConvertJob& o);

// The calibration windows, which the sweep cuts into batches (runtime_check/data_parallel.h).
struct CalibrationData {
  const std::vector<TokenWindow>& windows;
  std::int32_t bos;
  int window;  // tokens per window
};

// The source model's calibration sweep (kvfold report, and the source modes above): one
// collector per data-parallel slot, joined in slot order (deterministic for a given thread
// count). With `layer_done`, each layer's statistics (all slots merged) go to it as soon as
// every batch has passed that layer and are freed afterwards; the result then holds counts only.
using LayerDone =
    std::function<void(int layer, const LayerKvStatistics& statistics, std::int64_t kv_heads)>;
KvStatistics Calibrate(const Checkpoint& ck, const CalibrationData& data, unsigned needed,
                       const ComputePart& compute, const std::vector<LayerPair>& input_pairs = {},
                       std::size_t* slots_used = nullptr, const LayerDone& layer_done = {});

// What running a pipeline's passes left besides the draft.
struct PassesRun {
  nlohmann::ordered_json records = nlohmann::ordered_json::array();
  nlohmann::ordered_json spectra;  // the report's section, when a report is written
  std::size_t threads = 0;         // calibration slots; 0 when no calibration ran
  std::string activations;         // "converted" or "source": what the statistics were measured on
};

// Calibration (when a pass or the report needs it) and every pass; timings appended to
// `timings` ("calibration" first when it ran, then each pass).
PassesRun RunPasses(Pipeline& pipeline, ModelDraft& draft, const CalibrationData& data,
                    const ConvertJob& o, bool report, std::vector<PassTiming>& timings);

}  // namespace kvfold
