// Convert: the whole `kvfold convert` job as one library call — parse the pipeline, calibrate
// once, run the passes, write the output folder atomically with its kvfold.json.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "converter/job.h"
#include "converter/passes/pass.h"
#include "formats/checkpoint.h"

namespace kvfold {

// `kvfold convert`: a pipeline of passes over the input, written to the output.
struct ConvertJob {
  InputPart input;
  PipelineSpec passes;
  OutputPart output;
  ComputePart compute;
  ReportPart report;  // --report (with --eval: validation of the output against the input)
  // What layer-local pipelines calibrate on (--calibrate-on): "converted" (each layer on the
  // hidden states the converted layers below it produce; statistics collected again after a
  // pass that changes K/V) or "source" (the source model's activations, as kvfold did before).
  // Other pipelines always calibrate on the source. See converter/layer_loop.h.
  std::string calibrate_on = "converted";
  // false: calibrate every layer of the source first, then run pass after pass over the whole
  // model (the reference the layer-by-layer source run must equal; tests compare the two).
  bool layer_by_layer = true;
  // When set (--reproduce), the inputs must hash to these (kvfold.json's "sha256" fields).
  std::string expected_source_sha256;
  std::string expected_calib_sha256;
  // --kv-budget: the chosen plan (JSON text), recorded in kvfold.json as "plan".
  std::string plan_json;
};

struct PassTiming {
  std::string pass;  // canonical pass text
  double seconds = 0;
};

struct ConvertResult {
  std::vector<PassTiming> timings;  // "calibration" first when it ran, then each pass, "write"
  std::int64_t calibration_tokens = 0;
  double total_seconds = 0;
  // FLOP of the model forwards the passes ran (runtime_check/forward_flop.h), this rank's.
  std::uint64_t forward_flop = 0;
};

ConvertResult Convert(const ConvertJob& job);

// The narrow entry point the planner converts its candidates with: `passes` over `input` into
// the folder `dir` (every rank writes its own), quietly.
void ConvertToFolder(const InputPart& input, const PipelineSpec& passes, const std::string& dir,
                     const ComputePart& compute);

// SHA-256 over config.json and every weight file in name order: what a conversion read
// (kvfold.json's source.sha256), and what every rank compares under mpirun.
std::string SourceSha256(const Checkpoint& ck);

// The job that reruns the conversion recorded in `kvfold_json` (an output's kvfold.json): its
// pipeline with every parameter, calibration tokens, window and threads, its model and
// calibration text unless `given` names others, and their SHA-256 to check. -o, --force and
// the progress setting come from `given`. Same kvfold version, same inputs: byte-identical output.
ConvertJob ReproduceJob(const std::string& kvfold_json, const ConvertJob& given);

}  // namespace kvfold
