// Convert: the whole `kvfold convert` job as one library call — parse the pipeline, calibrate
// once, run the passes, write the output folder atomically with its kvfold.json.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "converter/export/model_exporter.h"
#include "runtime_check/reference_model.h"

namespace kvfold {

struct ConvertOptions {
  std::string model;            // source HF folder
  std::string calib_text;       // calibration text (UTF-8)
  std::string passes;           // pipeline text
  std::string output;           // output folder, or file for gguf (must not exist unless force)
  ExportOptions output_format;  // --format hf (default) or gguf, --dtype
  std::int64_t calib_tokens = 65536;
  int window = 256;
  bool force = false;
  int threads = 0;
  std::string device = "cpu";
  // Hidden states each model of the run keeps in memory; the rest spill to a temporary file
  // (--hidden-memory, in MiB on the command line).
  std::uint64_t hidden_memory_bytes = kDefaultHiddenMemoryBytes;
  bool progress = true;
  std::string report_path;  // when set: report.html there and report.json beside it
  std::string eval_text;    // when set: validation (original vs converted) in the report
  int eval_windows = 64;
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
  // kvfold report --budget: the budgets a KV plan is made for (converter/plan/planner.h).
  std::vector<double> plan_budgets;
  // kvfold report --runtime: the runtimes planned for ("kvfold", "llama.cpp", "vllm"); the
  // first one's plan is the report's table, every one's frontier is in its chart.
  std::vector<std::string> plan_runtimes = {"kvfold"};
  // Under mpirun (formats/ranks.h): every rank writes its own `output` (the planner's private
  // scratch conversions), not only the first.
  bool every_rank_writes = false;
};

struct PassTiming {
  std::string pass;  // canonical pass text
  double seconds = 0;
};

struct ConvertResult {
  std::vector<PassTiming> timings;  // "calibration" first when it ran, then each pass, "write"
  std::int64_t calibration_tokens = 0;
  double total_seconds = 0;
};

ConvertResult Convert(const ConvertOptions& options);

// SHA-256 over config.json and every weight file in name order: what a conversion read
// (kvfold.json's source.sha256), and what every rank compares under mpirun.
std::string SourceSha256(const Checkpoint& ck);

// The options that rerun the conversion recorded in `kvfold_json` (an output's kvfold.json):
// its pipeline with every parameter, calibration tokens, window and threads, its model and
// calibration text unless `given` names others, and their SHA-256 to check. -o, --force and
// the progress setting come from `given`. Same kvfold version, same inputs: byte-identical output.
ConvertOptions ReproduceOptions(const std::string& kvfold_json, const ConvertOptions& given);

// `kvfold report`: the report of a model without converting it (spectra and, with eval_text,
// its perplexity). Uses model, calib_text, calib_tokens, window, report_path, eval_text.
ConvertResult Analyze(const ConvertOptions& options);

}  // namespace kvfold
