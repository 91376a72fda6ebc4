#include "converter/job_support.h"

#include "calib/calibration_input.h"
#include "calib/text.h"
#include "converter/report/report.h"
#include "formats/atomic_file.h"
#include "formats/error.h"
#include "formats/version.h"
#include "runtime_check/data_parallel.h"

namespace kvfold {

namespace fs = std::filesystem;

double Since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

// Whether `inner` is `outer` or lies below it, both already canonical.
bool IsWithin(const fs::path& inner, const fs::path& outer) {
  auto o = outer.begin(), i = inner.begin();
  for (; o != outer.end(); ++o, ++i) {
    if (i == inner.end() || *i != *o) return false;
  }
  return true;
}

fs::path Resolved(const std::string& path) {
  std::error_code ec;
  fs::path p = fs::weakly_canonical(fs::absolute(path), ec);  // symlinks resolved where they exist
  return ec ? fs::absolute(path).lexically_normal() : p;
}

// An output that is, contains or lies inside the input would destroy the source checkpoint.
void CheckApartFromInput(const std::string& model, const std::string& path,
                         const std::string& what) {
  const fs::path in = Resolved(model), out = Resolved(path);
  if (in == out) Fail(path, "the " + what + " is the input model folder " + model);
  if (IsWithin(out, in)) Fail(path, "the " + what + " lies inside the input model folder " + model);
  if (IsWithin(in, out)) Fail(path, "the " + what + " contains the input model folder " + model);
}

// Creating and removing a temporary file next to `path` proves it can be written, before any
// work (a path under /proc or in a missing folder fails here, not after calibration).
void CheckCanWrite(const std::string& path, const std::string& what) {
  try {
    AtomicFile probe(path);
  } catch (const Error&) {
    Fail(path, "cannot write the " + what + " there");
  }
}

namespace {

// kvfold.json and the report record these paths as JSON text, which is UTF-8: a name that is
// not is refused before any work, not after the last layer.
void CheckPathsAreUtf8(const std::vector<const std::string*>& paths) {
  for (const std::string* path : paths) {
    if (FindInvalidUtf8(*path)) {
      Fail(*path,
           "its name is not valid UTF-8, which kvfold.json and the report record it as; "
           "rename it (or link to it under a UTF-8 name)");
    }
  }
}

}  // namespace

void CheckParts(const InputPart& input, const ComputePart& compute, const ReportPart& report) {
  CheckPathsAreUtf8({&input.model, &input.calib_text, &report.eval_text});
  if (!report.path.empty()) CheckReportPath(report.path);
  const int max_threads = MaxCpuThreads();
  if (input.window < 2 || input.window > (1 << 20))
    Fail("--window", "must be between 2 and 1048576 tokens");
  if (input.calib_tokens < input.window)
    Fail("--calib-tokens", "must be at least one window (" + std::to_string(input.window) + ")");
  if (report.eval_windows < 1) Fail("--eval-windows", "must be positive");
  if (compute.threads < 0 || compute.threads > max_threads) {
    Fail("--threads", "must be between 0 (all cores) and " + std::to_string(max_threads) +
                          " (4 x this machine's cores)");
  }
}

std::vector<RankInput> RankInputs(const char* command, const InputPart& input,
                                  const std::string& pipeline, const std::string& calibrate_on,
                                  bool report, const std::string& source_sha256,
                                  const std::string& calib_sha256) {
  return {{"kvfold command", command, ""},
          {"checkpoint", source_sha256, input.model},
          {"calibration file", calib_sha256, input.calib_text},
          {"--passes", pipeline, ""},
          {"--calib-tokens", std::to_string(input.calib_tokens), ""},
          {"--window", std::to_string(input.window), ""},
          {"--calibrate-on", calibrate_on, ""},
          {"--report", report ? "given" : "not given", ""}};
}

CalibrationInput LoadCalibration(const Checkpoint& ck, const InputPart& o, int threads) {
  if (ck.tokenizer_path.empty())
    Fail(o.model, "no tokenizer.json or tokenizer.model in the model folder");
  CalibrationInput in;
  in.tokenizer = Tokenizer::Load(ck.tokenizer_path);
  const CalibrationTokens calib =
      LoadCalibrationTokens(o.calib_text, *in.tokenizer, ck.config.vocab_size,
                            static_cast<std::size_t>(o.calib_tokens), threads);
  in.sha256 = calib.sha256;
  in.windows =
      CutWindows(calib.tokens, o.window, static_cast<int>(o.calib_tokens / o.window), o.calib_text);
  return in;
}

nlohmann::ordered_json KvHeadsJson(const ModelConfig& c) {
  if (c.PerLayerKvHeads()) return c.layer_kv_heads;
  return c.num_key_value_heads;
}

nlohmann::ordered_json ReportBase(const Checkpoint& ck, const InputPart& o,
                                  const std::string& pipeline, const std::string& calib_sha,
                                  std::int64_t calib_tokens) {
  const ModelConfig& c = ck.config;
  return {{"schema", "kvfold-report"},
          {"format_version", 1},
          {"kvfold_version", kVersion},
          {"model",
           {{"path", o.model},
            {"architecture", c.architecture},
            {"layers", c.num_hidden_layers},
            {"heads", c.num_attention_heads},
            {"kv_heads", KvHeadsJson(c)},
            {"head_dim", c.head_dim},
            {"kv_bytes_per_token", c.KvBytesPerToken(ck.StoredElementBytes())}}},
          {"run",
           {{"pipeline", pipeline},
            {"calibration",
             {{"file", o.calib_text},
              {"sha256", calib_sha},
              {"tokens", calib_tokens},
              {"window", o.window}}}}}};
}

std::vector<TokenWindow> EvalWindows(const Tokenizer& tokenizer, const InputPart& input,
                                     const ReportPart& report, std::int64_t vocab_size,
                                     int threads) {
  const std::size_t needed =
      report.eval_windows < 0
          ? 0
          : static_cast<std::size_t>(report.eval_windows) * static_cast<std::size_t>(input.window);
  return CutWindows(EncodeTextFile(report.eval_text, tokenizer, vocab_size, needed, threads),
                    input.window, report.eval_windows, report.eval_text);
}

nlohmann::ordered_json PerplexityJson(const PerplexityResult& p) {
  return {{"ppl", p.ppl}, {"mean_nll", p.mean_nll}};
}

void FinishReport(nlohmann::ordered_json& report, ConvertResult& result,
                  const std::string& html_path, Clock::time_point t_start) {
  nlohmann::ordered_json timings = nlohmann::ordered_json::array();
  for (const auto& t : result.timings)
    timings.push_back({{"stage", t.pass}, {"seconds", t.seconds}});
  report["run"]["timings"] = timings;
  report["run"]["total_seconds"] = Since(t_start);
  report["run"]["peak_rss_mib"] = PeakRssMib();
  report["run"]["forward_flop"] = result.forward_flop;
  WriteReport(html_path, report);
}

RuntimeOptions StreamedRuntime(const ComputePart& compute) {
  RuntimeOptions r{compute.device, compute.threads};
  r.stream_layers = true;  // one layer of weights in memory at a time
  r.hidden_state_budget_bytes = compute.hidden_memory_bytes;
  return r;
}

}  // namespace kvfold
