// What the jobs of kvfold convert and kvfold report share: checks of their parts before any
// work, the calibration input, and the report's common sections. Internal to converter/.
#pragma once

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "calib/tokenizer.h"
#include "calib/windows.h"
#include "converter/convert.h"
#include "converter/job.h"
#include "formats/checkpoint.h"
#include "formats/ranks.h"
#include "runtime_check/evaluate.h"

namespace kvfold {

using Clock = std::chrono::steady_clock;
double Since(Clock::time_point t0);

// Canonical (symlinks resolved where they exist), and whether `inner` is or lies below `outer`.
std::filesystem::path Resolved(const std::string& path);
bool IsWithin(const std::filesystem::path& inner, const std::filesystem::path& outer);

// An output that is, contains or lies inside the input would destroy the source checkpoint.
void CheckApartFromInput(const std::string& model, const std::string& path,
                         const std::string& what);
// Creating and removing a temporary file next to `path` proves it can be written, before any
// work (a path under /proc or in a missing folder fails here, not after calibration).
void CheckCanWrite(const std::string& path, const std::string& what);
// Numbers and paths the CLI takes as given: refused with the option's name, before any work.
void CheckParts(const InputPart& input, const ComputePart& compute, const ReportPart& report);

// The calibration text as the run uses it: recorded by hash, cut into the first
// calib_tokens / window windows with the checkpoint's tokenizer.
struct CalibrationInput {
  std::string sha256;
  std::unique_ptr<Tokenizer> tokenizer;
  std::vector<TokenWindow> windows;
  std::int64_t tokens() const {
    return static_cast<std::int64_t>(windows.size() * windows.front().size());
  }
};
// `threads`: how many the tokenizer may encode on (ThreadsPerRank of --threads).
CalibrationInput LoadCalibration(const Checkpoint& ck, const InputPart& input, int threads);

// What every rank must have alike under mpirun (formats/ranks.h): the inputs and the options
// that shape the joined statistics.
std::vector<RankInput> RankInputs(const char* command, const InputPart& input,
                                  const std::string& pipeline, const std::string& calibrate_on,
                                  bool report, const std::string& source_sha256,
                                  const std::string& calib_sha256);

// The KV heads, or one count per layer where they differ.
nlohmann::ordered_json KvHeadsJson(const ModelConfig& c);
// The model and run sections every report starts with.
nlohmann::ordered_json ReportBase(const Checkpoint& ck, const InputPart& input,
                                  const std::string& pipeline, const std::string& calib_sha,
                                  std::int64_t calib_tokens);
// The report's evaluation windows (report.eval_text, cut like the calibration), encoded on up to
// `threads` threads.
std::vector<TokenWindow> EvalWindows(const Tokenizer& tokenizer, const InputPart& input,
                                     const ReportPart& report, std::int64_t vocab_size,
                                     int threads);
nlohmann::ordered_json PerplexityJson(const PerplexityResult& p);
// Timings, total time and peak memory into the report, then report.html and .json at html_path.
void FinishReport(nlohmann::ordered_json& report, ConvertResult& result,
                  const std::string& html_path, Clock::time_point t_start);

}  // namespace kvfold
