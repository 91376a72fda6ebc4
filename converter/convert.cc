#include "converter/convert.h"

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <optional>

#include "calib/calibration_input.h"
#include "calib/kv_statistics.h"
#include "calib/text.h"
#include "calib/tokenizer.h"
#include "calib/windows.h"
#include "converter/export/gguf_exporter.h"
#include "converter/export/gguf_model.h"
#include "converter/layer_loop.h"
#include "converter/passes/model_draft.h"
#include "converter/passes/pass.h"
#include "converter/plan/planner.h"
#include "converter/report/report.h"
#include "formats/atomic_file.h"
#include "formats/error.h"
#include "formats/mapped_file.h"
#include "formats/progress.h"
#include "formats/ranks.h"
#include "formats/sha256.h"
#include "formats/staged_folder.h"
#include "formats/version.h"
#include "runtime_check/data_parallel.h"
#include "runtime_check/evaluate.h"
#include "runtime_check/reference_model.h"

namespace kvfold {
namespace {

using Clock = std::chrono::steady_clock;

double Since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

namespace fs = std::filesystem;

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

// kvfold.json and the report record these paths as JSON text, which is UTF-8: a name that is
// not is refused before any work, not after the last layer.
void CheckPathsAreUtf8(const ConvertOptions& o) {
  for (const std::string* path : {&o.model, &o.calib_text, &o.eval_text}) {
    if (FindInvalidUtf8(*path)) {
      Fail(*path,
           "its name is not valid UTF-8, which kvfold.json and the report record it as; "
           "rename it (or link to it under a UTF-8 name)");
    }
  }
}

// Numbers the CLI takes as given: refused here with the option's name, before any work.
void CheckOptions(const ConvertOptions& o) {
  CheckPathsAreUtf8(o);
  if (!o.report_path.empty()) CheckReportPath(o.report_path);
  const int max_threads = MaxCpuThreads();
  if (o.window < 2 || o.window > (1 << 20))
    Fail("--window", "must be between 2 and 1048576 tokens");
  if (o.calib_tokens < o.window)
    Fail("--calib-tokens", "must be at least one window (" + std::to_string(o.window) + ")");
  if (o.eval_windows < 1) Fail("--eval-windows", "must be positive");
  if (o.threads < 0 || o.threads > max_threads) {
    Fail("--threads", "must be between 0 (all cores) and " + std::to_string(max_threads) +
                          " (4 x this machine's cores)");
  }
}

// What every rank must have alike under mpirun (formats/ranks.h): the inputs and the options that
// shape the joined statistics.
std::vector<RankInput> RankInputs(const char* command, const ConvertOptions& o,
                                  const std::string& pipeline, const std::string& source_sha256,
                                  const std::string& calib_sha256) {
  return {{"kvfold command", command, ""},
          {"checkpoint", source_sha256, o.model},
          {"calibration file", calib_sha256, o.calib_text},
          {"--passes", pipeline, ""},
          {"--calib-tokens", std::to_string(o.calib_tokens), ""},
          {"--window", std::to_string(o.window), ""},
          {"--calibrate-on", o.calibrate_on, ""},
          {"--report", o.report_path.empty() ? "not given" : "given", ""}};
}

}  // namespace

std::string SourceSha256(const Checkpoint& ck) {
  Sha256 h;
  MappedFile config(ck.dir + "/config.json");
  h.Update(config.bytes());
  for (const auto& f : ck.tensors.files()) {
    MappedFile weights(f->path());
    constexpr std::size_t kChunk = std::size_t{64} << 20;  // hashed pages leave the resident set
    for (std::size_t at = 0; at < weights.size(); at += kChunk) {
      const std::string_view chunk = weights.bytes().substr(at, kChunk);
      h.Update(chunk);
      ReleaseMappedPages(chunk);
    }
  }
  return h.HexDigest();
}

namespace {

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

CalibrationInput LoadCalibration(const Checkpoint& ck, const ConvertOptions& o) {
  if (ck.tokenizer_path.empty())
    Fail(o.model, "no tokenizer.json or tokenizer.model in the model folder");
  CalibrationInput in;
  in.tokenizer = Tokenizer::Load(ck.tokenizer_path);
  const CalibrationTokens calib =
      LoadCalibrationTokens(o.calib_text, *in.tokenizer, ck.config.vocab_size);
  in.sha256 = calib.sha256;
  in.windows =
      CutWindows(calib.tokens, o.window, static_cast<int>(o.calib_tokens / o.window), o.calib_text);
  return in;
}

// The KV heads, or one count per layer where they differ.
nlohmann::ordered_json KvHeadsJson(const ModelConfig& c) {
  if (c.PerLayerKvHeads()) return c.layer_kv_heads;
  return c.num_key_value_heads;
}

// The model and run sections every report starts with.
nlohmann::ordered_json ReportBase(const Checkpoint& ck, const ConvertOptions& o,
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

std::vector<TokenWindow> EvalWindows(const Tokenizer& tokenizer, const ConvertOptions& o,
                                     std::int64_t vocab_size) {
  return CutWindows(EncodeTextFile(o.eval_text, tokenizer, vocab_size), o.window, o.eval_windows,
                    o.eval_text);
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
  WriteReport(html_path, report);
}

}  // namespace

ConvertResult Analyze(const ConvertOptions& o) {
  const auto t_start = Clock::now();
  ConvertResult result;
  if (o.report_path.empty()) Fail("report", "-o REPORT.html is required");
  CheckOptions(o);
  CheckApartFromInput(o.model, o.report_path, "report");
  CheckCanWrite(o.report_path, "report");
  const Checkpoint ck = OpenCheckpoint(o.model);
  const CalibrationInput calib = LoadCalibration(ck, o);
  const std::string source_sha256 = RankCount() > 1 ? SourceSha256(ck) : "";  // several ranks
  RequireSameOnEveryRank(RankInputs("report", o, "", source_sha256, calib.sha256));
  const Tokenizer& tokenizer = *calib.tokenizer;
  result.calibration_tokens = calib.tokens();
  auto t0 = Clock::now();
  const KvStatistics stats =
      Calibrate(ck, {calib.windows, tokenizer.bos_id()}, kReportStatistics, o);
  result.timings.push_back({"calibration", Since(t0)});
  nlohmann::ordered_json report = ReportBase(ck, o, "", calib.sha256, result.calibration_tokens);
  const std::int64_t kv = ck.config.num_key_value_heads;
  report["spectra"] = KvSpectra(stats, kv % 2 == 0 ? 2 : 1);  // what halving the KV heads keeps
  if (!o.eval_text.empty()) {
    t0 = Clock::now();
    const auto windows_eval = EvalWindows(tokenizer, o, ck.config.vocab_size);
    const auto model = ReferenceModel::Load(ck, StreamedRuntime(o));
    EvalOptions eo;
    eo.progress = o.progress;
    const PerplexityResult p = EvaluatePerplexity(*model, windows_eval, tokenizer.bos_id(), eo);
    report["validation"] = {{"text", o.eval_text},
                            {"windows", p.windows},
                            {"tokens_predicted", p.tokens_predicted},
                            {"original", PerplexityJson(p)}};
    result.timings.push_back({"validation", Since(t0)});
  }
  if (!o.plan_budgets.empty()) {
    t0 = Clock::now();
    for (const std::string& runtime : o.plan_runtimes) {
      PlanOptions p = PlanOptionsFor(o);
      p.runtime = ParsePlanRuntime(runtime, "--runtime");
      nlohmann::ordered_json plan = PlanJson(RunPlan(p));
      if (!report.contains("plan")) {
        report["plan"] = std::move(plan);
      } else {
        report["plan"]["other_runtimes"].push_back(std::move(plan));
      }
    }
    result.timings.push_back({"plan", Since(t0)});
  }
  FinishReport(report, result, o.report_path, t_start);
  result.total_seconds = Since(t_start);
  return result;
}

namespace {

// The report goes into the output folder when asked to be written there (`--report OUT/x.html`
// with OUT the -o folder): it is then part of the atomic output.
bool ReportInsideOutput(const ConvertOptions& o) {
  return !o.report_path.empty() && Resolved(o.report_path).parent_path() == Resolved(o.output);
}

nlohmann::ordered_json KvfoldJson(const ConvertOptions& o, const Checkpoint& ck,
                                  const std::string& source_sha256, const ModelDraft& draft,
                                  const std::string& pipeline, const CalibrationInput& calib,
                                  std::size_t threads, const std::string& activations,
                                  const std::vector<std::string>& not_copied,
                                  const nlohmann::ordered_json& pass_records) {
  return {
      {"format_version", 1},
      {"kvfold_version", kVersion},
      {"pipeline", pipeline},
      {"vanilla_checkpoint", draft.config.key_projection_heads == 0 && !draft.config.SharesKv()},
      {"source", {{"path", o.model}, {"sha256", source_sha256}}},
      {"calibration",
       {{"file", o.calib_text},
        {"sha256", calib.sha256},
        {"tokens", calib.tokens()},
        {"window", o.window},
        {"threads", threads},
        {"ranks", RankCount()},
        {"activations", activations}}},
      {"kv_cache_bytes_per_token",
       {{"before", ck.config.KvBytesPerToken(ck.StoredElementBytes())},
        {"after", draft.config.KvBytesPerToken(ck.StoredElementBytes())}}},
      {"not_copied", not_copied},
      {"passes", pass_records},
  };
}

// --kv-budget: the plan the pipeline came from, after the passes' records.
void AddPlan(const ConvertOptions& o, nlohmann::ordered_json& kvfold_json) {
  if (!o.plan_json.empty()) kvfold_json["plan"] = nlohmann::ordered_json::parse(o.plan_json);
}

// --reproduce: the inputs must be the bytes the recorded conversion read.
void CheckRecordedInputs(const ConvertOptions& o, const std::string& source_sha256,
                         const std::string& calib_sha256) {
  if (!o.expected_source_sha256.empty() && source_sha256 != o.expected_source_sha256) {
    Fail(o.model, "is not the checkpoint the recorded conversion read (its SHA-256 differs)");
  }
  if (!o.expected_calib_sha256.empty() && calib_sha256 != o.expected_calib_sha256) {
    Fail(o.calib_text,
         "is not the calibration text the recorded conversion read (its SHA-256 differs)");
  }
}

// --format gguf: one file llama.cpp runs; what it cannot represent is refused before any work.
void CheckGgufConvert(const ConvertOptions& o, const Checkpoint& ck) {
  GgufArchitecture(ck.config, o.model);
  if (!o.report_path.empty() && !o.eval_text.empty()) {
    Fail("--format gguf",
         "the report's validation reads an hf output: convert to hf with "
         "--report, then kvfold export it");
  }
  if (ReportInsideOutput(o)) Fail(o.report_path, "a GGUF output is a file, not a folder");
  CheckGgufOutputPath(o.output, o.force);
}

// The report's validation section: the original against the converted model in `converted_dir`.
nlohmann::ordered_json Validation(const ConvertOptions& o, const Checkpoint& ck,
                                  const std::string& converted_dir, const Tokenizer& tokenizer) {
  const auto windows_eval = EvalWindows(tokenizer, o, ck.config.vocab_size);
  const Checkpoint out = OpenCheckpoint(converted_dir);
  const auto original = ReferenceModel::Load(ck, StreamedRuntime(o));
  const auto converted = ReferenceModel::Load(out, StreamedRuntime(o));
  EvalOptions eo;
  eo.progress = o.progress;
  const ComparisonResult c =
      CompareModels(*original, *converted, windows_eval, tokenizer.bos_id(), eo);
  return {{"text", o.eval_text},
          {"windows", c.base.windows},
          {"tokens_predicted", c.base.tokens_predicted},
          {"original", PerplexityJson(c.base)},
          {"converted", PerplexityJson(c.other)},
          {"kl", c.kl},
          {"top1_agreement", c.top1_agreement},
          {"delta_nll", c.delta_nll}};
}

}  // namespace

ConvertResult Convert(const ConvertOptions& o) {
  const auto t_start = Clock::now();
  ConvertResult result;

  // Everything that can be refused is refused before any work.
  if (o.output.empty()) Fail("-o", "an output folder is required");
  CheckOptions(o);
  CheckApartFromInput(o.model, o.output, "output folder");
  if (!o.report_path.empty()) CheckApartFromInput(o.model, o.report_path, "report");
  const Checkpoint ck = OpenCheckpoint(o.model);
  if (ck.config.SharesKv()) {
    Fail(o.model,
         "its layers already share K/V (layer_types); kvfold convert reads models without "
         "cross-layer sharing");
  }
  Pipeline pipeline = CreatePipeline(o.passes, ck.config);
  CheckPassOrder(pipeline, CalibratesOnConverted(pipeline, o));
  const bool gguf = o.output_format.format == OutputFormat::kGguf;
  if (gguf) CheckGgufConvert(o, ck);
  for (const auto& pass : pipeline.passes) {
    const std::string why = pass->Unexportable(o.output_format.format);
    if (!why.empty()) Fail(gguf ? "--format gguf" : "--format hf", why);
  }
  const bool passes_calibrate = pipeline.needed != 0;  // a report alone does not shape the output
  const bool report_inside = ReportInsideOutput(o);
  if (!o.report_path.empty() && !report_inside &&
      IsWithin(Resolved(o.report_path), Resolved(o.output))) {
    Fail(o.report_path,
         "a report inside the output folder must be directly in it (e.g. OUT/report.html)");
  }
  if (!o.report_path.empty() && !report_inside) CheckCanWrite(o.report_path, "report");
  // Under mpirun every rank computes the conversion and the first writes it (docs/mpi.md).
  const bool writes = o.every_rank_writes || IsFirstRank();
  std::optional<StagedFolder> staging;
  if (writes && !gguf) staging.emplace(o.output, o.force);  // an unwritable -o fails here

  // Calibration text: always read and hashed (recorded), run through the model when needed.
  const CalibrationInput calib = LoadCalibration(ck, o);
  const std::string source_sha256 = SourceSha256(ck);  // recorded in kvfold.json; hashed once
  CheckRecordedInputs(o, source_sha256, calib.sha256);
  RequireSameOnEveryRank(RankInputs("convert", o, pipeline.Text(), source_sha256, calib.sha256));
  const Tokenizer& tokenizer = *calib.tokenizer;
  result.calibration_tokens = calib.tokens();
  ModelDraft draft(ck);
  if (writes) {  // layer-local pipelines write each layer as it is done
    draft.OpenOutput(MakeExporter(gguf ? o.output : staging->path(), ck, o.output_format));
  } else {
    draft.DiscardOutput();
  }
  const std::uint64_t joined_before = BytesJoined();  // --kv-budget's planner joined its own
  const PassesRun run = RunPasses(pipeline, draft, {calib.windows, tokenizer.bos_id()}, o,
                                  !o.report_path.empty(), result.timings);
  if (RankCount() > 1 && o.progress) {  // sizes a cluster (docs/mpi.md)
    const double mib = static_cast<double>(BytesJoined() - joined_before) / (1 << 20);
    std::fprintf(stderr,
                 "kvfold: %d ranks; statistics joined: %.3f MiB from each rank, %.3f MiB a layer\n",
                 RankCount(), mib, mib / static_cast<double>(ck.config.num_hidden_layers));
  }
  if (!writes) {
    WaitForAllRanks();  // with the writer, before its output becomes visible
    return result;
  }
  const nlohmann::ordered_json& pass_records = run.records;
  const std::size_t threads = run.threads;

  const auto t_write = Clock::now();
  draft.WriteRemaining();
  const std::vector<std::string> not_copied = draft.NotCopied();
  for (const auto& n : not_copied) {
    if (o.progress)
      std::fprintf(stderr, "kvfold: not copied from %s: %s\n", o.model.c_str(), n.c_str());
  }
  nlohmann::ordered_json meta =
      KvfoldJson(o, ck, source_sha256, draft, pipeline.Text(), calib,
                 passes_calibrate ? threads : 0, run.activations, not_copied, pass_records);
  AddPlan(o, meta);
  draft.FinishOutput(&meta);
  result.timings.push_back({"write", Since(t_write)});

  nlohmann::ordered_json report;
  if (!o.report_path.empty()) {
    report = ReportBase(ck, o, pipeline.Text(), calib.sha256, result.calibration_tokens);
    report["output"] = {
        {"path", o.output},
        {"kv_heads", KvHeadsJson(draft.config)},
        {"kv_bytes_per_token", draft.config.KvBytesPerToken(ck.StoredElementBytes())},
        {"vanilla_checkpoint", draft.config.key_projection_heads == 0 && !draft.config.SharesKv()}};
    if (!o.eval_text.empty()) {
      const auto t0 = Clock::now();
      report["validation"] = Validation(o, ck, staging->path(), tokenizer);
      result.timings.push_back({"validation", Since(t0)});
    }
    const auto t0 = Clock::now();
    report["spectra"] = run.spectra;
    report["passes"] = pass_records;
    result.timings.push_back({"report", Since(t0)});
  }
  if (report_inside) {  // written before the swap, as part of the output
    FinishReport(report, result,
                 staging->path() + "/" + Resolved(o.report_path).filename().string(), t_start);
  }
  WaitForAllRanks();  // a rank lost until here leaves no output
  if (staging) staging->Commit();
  if (!o.report_path.empty() && !report_inside)
    FinishReport(report, result, o.report_path, t_start);
  result.total_seconds = Since(t_start);
  return result;
}

}  // namespace kvfold
