// The parts every command's job is made of. Each command (convert, report, plan, eval) has one
// job struct composed of these (converter/convert.h, analyze.h, plan/planner.h, eval.h): the
// command line fills it, the library runs it.
#pragma once

#include <cstdint>
#include <string>

#include "converter/export/model_exporter.h"
#include "runtime_check/reference_model.h"

namespace kvfold {

// What a command reads: a model and the text it calibrates on, cut into windows.
struct InputPart {
  std::string model;       // HuggingFace folder
  std::string calib_text;  // UTF-8 text, JSON Lines or .npy ids (calib/calibration_input.h)
  std::int64_t calib_tokens = 65536;
  int window = 256;
};

// How it computes: every model it runs is streamed, one layer of weights at a time.
struct ComputePart {
  int threads = 0;  // 0: all cores
  std::string device = "cpu";
  // Hidden states each model of the run keeps in memory; the rest spill to a temporary file
  // (--hidden-memory, in MiB on the command line).
  std::uint64_t hidden_memory_bytes = kDefaultHiddenMemoryBytes;
  bool progress = true;  // progress lines on stderr
};

// Where a conversion writes.
struct OutputPart {
  std::string path;      // folder, or file for gguf (must not exist unless force)
  ExportOptions format;  // --format hf (default) or gguf, --dtype
  bool force = false;
  // Under mpirun (formats/ranks.h): every rank writes its own `path` (the planner's private
  // scratch conversions), not only the first.
  bool every_rank_writes = false;
};

// The calibration report (converter/report): report.html at `path`, report.json beside it.
struct ReportPart {
  std::string path;       // "": no report
  std::string eval_text;  // when set: validation perplexity (and KL for a conversion)
  int eval_windows = 64;
};

// The runtime options of every model a job runs: streamed, one layer at a time.
RuntimeOptions StreamedRuntime(const ComputePart& compute);

}  // namespace kvfold
