#include "converter/convert.h"

#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <cstdio>
#include <cstdlib>

#include <nlohmann/json.hpp>

#include "calib/kv_statistics.h"
#include "calib/text.h"
#include "calib/tokenizer.h"
#include "calib/windows.h"
#include "converter/model_draft.h"
#include "converter/pass.h"
#include "formats/atomic_file.h"
#include "formats/error.h"
#include "formats/mapped_file.h"
#include "formats/progress.h"
#include "formats/sha256.h"
#include "formats/version.h"
#include "converter/report.h"
#include "runtime_check/data_parallel.h"
#include "runtime_check/evaluate.h"
#include "runtime_check/reference_model.h"

namespace kvfold {
namespace {

using Clock = std::chrono::steady_clock;

double Since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

bool Exists(const std::string& path) {
  struct stat st {};
  return ::stat(path.c_str(), &st) == 0;
}

// The folder `path` will be created in must exist and be writable.
void CheckWritableParent(const std::string& path, const std::string& what) {
  const std::size_t slash = path.find_last_of('/');
  const std::string parent = slash == std::string::npos ? "." : (slash == 0 ? "/" : path.substr(0, slash));
  if (::access(parent.c_str(), W_OK) != 0) {
    Fail(path, "cannot create the " + what + ": " + std::strerror(errno) + " (" + parent + ")");
  }
}

void RemoveTree(const std::string& path) {
  const std::string cmd = "rm -rf '" + path + "'";
  if (std::system(cmd.c_str()) != 0) std::fprintf(stderr, "kvfold: warning: could not remove %s\n", path.c_str());
}

// SHA-256 over config.json and every weight file in name order: what the conversion read.
std::string SourceSha256(const Checkpoint& ck) {
  Sha256 h;
  MappedFile config(ck.dir + "/config.json");
  h.Update(config.bytes());
  for (const auto& f : ck.tensors.files()) {
    MappedFile weights(f->path());
    h.Update(weights.bytes());
  }
  return h.HexDigest();
}

// The calibration forward: the source model over the calibration windows, batches run
// data-parallel with one collector per slot, joined in slot order (deterministic for a given
// thread count).
KvStatistics Calibrate(const Checkpoint& ck, const std::vector<TokenWindow>& windows,
                       std::int32_t bos, unsigned needed, const ConvertOptions& o,
                       const std::vector<LayerPair>& input_pairs = {}) {
  const auto model = ReferenceModel::Load(ck, {o.device, o.threads});
  const std::size_t per_batch = std::max<std::size_t>(1, 2048 / static_cast<std::size_t>(o.window));
  const std::size_t batches = (windows.size() + per_batch - 1) / per_batch;
  std::vector<KvStatisticsCollector> collectors;
  for (std::size_t s = 0; s < DataParallelSlots(*model); ++s) {
    collectors.emplace_back(needed, static_cast<int>(ck.config.num_hidden_layers),
                            ck.config.num_key_value_heads, ck.config.head_dim, ck.config.hidden_size, input_pairs);
  }
  Progress progress("calibrate", static_cast<std::int64_t>(windows.size()), "windows", o.progress);
  RunDataParallel(
      *model, batches,
      [&](std::size_t b, std::size_t slot) {
        const std::size_t first = b * per_batch;
        const std::size_t count = std::min(per_batch, windows.size() - first);
        std::vector<std::int32_t> tokens;
        tokens.reserve(count * static_cast<std::size_t>(o.window));
        for (std::size_t w = first; w < first + count; ++w) AppendModelInput(windows[w], bos, tokens);
        model->Observe(tokens, static_cast<int>(count), collectors[slot]);
      },
      [&](std::size_t done) {
        progress.Update(static_cast<std::int64_t>(std::min(windows.size(), done * per_batch)));
      });
  KvStatistics stats = collectors.front().statistics();
  for (std::size_t s = 1; s < collectors.size(); ++s) stats.Merge(collectors[s].statistics());
  return stats;
}

// The calibration text as the run uses it: recorded by hash, cut into the first
// calib_tokens / window windows with the checkpoint's tokenizer.
struct CalibrationInput {
  std::string sha256;
  std::unique_ptr<Tokenizer> tokenizer;
  std::vector<TokenWindow> windows;
  std::int64_t tokens() const { return static_cast<std::int64_t>(windows.size() * windows.front().size()); }
};

CalibrationInput LoadCalibration(const Checkpoint& ck, const ConvertOptions& o) {
  if (o.calib_tokens < o.window) Fail("--calib-tokens", "must be at least one window");
  if (ck.tokenizer_path.empty()) Fail(o.model, "no tokenizer.model in the model folder");
  CalibrationInput in;
  const std::string text = LoadText(o.calib_text);
  in.sha256 = Sha256Hex(text);
  in.tokenizer = Tokenizer::Load(ck.tokenizer_path);
  in.windows = CutWindows(in.tokenizer->Encode(text), o.window, static_cast<int>(o.calib_tokens / o.window),
                          o.calib_text);
  return in;
}

// The model and run sections every report starts with.
nlohmann::ordered_json ReportBase(const Checkpoint& ck, const ConvertOptions& o, const std::string& pipeline,
                                  const std::string& calib_sha, std::int64_t calib_tokens) {
  const ModelConfig& c = ck.config;
  return {{"schema", "kvfold-report"},
          {"format_version", 1},
          {"kvfold_version", kVersion},
          {"model",
           {{"path", o.model},
            {"architecture", c.architecture},
            {"layers", c.num_hidden_layers},
            {"heads", c.num_attention_heads},
            {"kv_heads", c.num_key_value_heads},
            {"head_dim", c.head_dim},
            {"kv_bytes_per_token", c.KvBytesPerToken(ck.StoredElementBytes())}}},
          {"run",
           {{"pipeline", pipeline},
            {"calibration",
             {{"file", o.calib_text}, {"sha256", calib_sha}, {"tokens", calib_tokens}, {"window", o.window}}}}}};
}

std::vector<TokenWindow> EvalWindows(const Tokenizer& tokenizer, const ConvertOptions& o) {
  return CutWindows(tokenizer.Encode(LoadText(o.eval_text)), o.window, o.eval_windows, o.eval_text);
}

nlohmann::ordered_json PerplexityJson(const PerplexityResult& p) {
  return {{"ppl", p.ppl}, {"mean_nll", p.mean_nll}};
}

void FinishReport(nlohmann::ordered_json& report, ConvertResult& result, const ConvertOptions& o,
                  Clock::time_point t_start) {
  nlohmann::ordered_json timings = nlohmann::ordered_json::array();
  for (const auto& t : result.timings) timings.push_back({{"stage", t.pass}, {"seconds", t.seconds}});
  report["run"]["timings"] = timings;
  report["run"]["total_seconds"] = Since(t_start);
  report["run"]["peak_rss_mib"] = PeakRssMib();
  WriteReport(o.report_path, report);
}

// Spectra need all three second moments; a report asks calibration for them.
constexpr unsigned kReportStatistics = kStatValue | kStatKeyPreRope | kStatKeyPostRope;

}  // namespace

ConvertResult Analyze(const ConvertOptions& o) {
  const auto t_start = Clock::now();
  ConvertResult result;
  if (o.report_path.empty()) Fail("report", "-o REPORT.html is required");
  CheckWritableParent(o.report_path, "report");
  const Checkpoint ck = OpenCheckpoint(o.model);
  const CalibrationInput calib = LoadCalibration(ck, o);
  const Tokenizer& tokenizer = *calib.tokenizer;
  result.calibration_tokens = calib.tokens();
  auto t0 = Clock::now();
  const KvStatistics stats = Calibrate(ck, calib.windows, tokenizer.bos_id(), kReportStatistics, o);
  result.timings.push_back({"calibration", Since(t0)});
  nlohmann::ordered_json report = ReportBase(ck, o, "", calib.sha256, result.calibration_tokens);
  const std::int64_t kv = ck.config.num_key_value_heads;
  report["spectra"] = KvSpectra(stats, kv % 2 == 0 ? 2 : 1);  // what halving the KV heads keeps
  if (!o.eval_text.empty()) {
    t0 = Clock::now();
    const auto windows_eval = EvalWindows(tokenizer, o);
    const auto model = ReferenceModel::Load(ck, {o.device, o.threads});
    EvalOptions eo;
    eo.progress = o.progress;
    const PerplexityResult p = EvaluatePerplexity(*model, windows_eval, tokenizer.bos_id(), eo);
    report["validation"] = {{"text", o.eval_text},
                            {"windows", p.windows},
                            {"tokens_predicted", p.tokens_predicted},
                            {"original", PerplexityJson(p)}};
    result.timings.push_back({"validation", Since(t0)});
  }
  FinishReport(report, result, o, t_start);
  result.total_seconds = Since(t_start);
  return result;
}

ConvertResult Convert(const ConvertOptions& o) {
  const auto t_start = Clock::now();
  ConvertResult result;

  // Everything that can be refused is refused before any work.
  std::vector<PassSpec> specs = ParsePipeline(o.passes);
  for (const auto& spec : specs) {
    if (spec.name == "kv-norm-analysis" && specs.size() > 1) {
      Fail("--passes", "kv-norm-analysis runs alone: its table describes the input model's heads "
                       "(analyse a converted model in a second run)");
    }
  }
  if (o.output.empty()) Fail("-o", "an output folder is required");
  if (Exists(o.output) && !o.force) Fail(o.output, "already exists (use --force to replace it)");
  CheckWritableParent(o.output, "output folder");
  if (!o.report_path.empty()) CheckWritableParent(o.report_path, "report");
  const Checkpoint ck = OpenCheckpoint(o.model);
  if (ck.config.SharesKv()) {
    Fail(o.model, "its layers already share K/V (layer_types); kvfold convert reads models without cross-layer sharing");
  }
  std::vector<std::unique_ptr<Pass>> passes;
  unsigned needed = 0;
  std::vector<LayerPair> input_pairs;
  for (const auto& spec : specs) {
    for (const auto& info : PassRegistry()) {
      if (spec.name == info.name) passes.push_back(info.create(spec, ck.config));
    }
    needed |= passes.back()->NeededStatistics();
    const auto pairs = passes.back()->InputPairs();
    input_pairs.insert(input_pairs.end(), pairs.begin(), pairs.end());
  }
  // Calibration runs once, on the source: a pass that reads its K/V statistics, or one that
  // writes numbers tied to K/V, cannot follow a pass that changes K/V; and nothing may change
  // K/V after such numbers are written (they would describe heads that no longer exist).
  // Attention-input moments (kStatLayerInputs) describe h, not K/V: cross-layer sharing may
  // follow gqa-svd, fitting the draft's projections against the source's inputs.
  for (std::size_t i = 0; i < passes.size(); ++i) {
    for (std::size_t j = 0; j < i; ++j) {
      const unsigned kv_statistics = passes[i]->NeededStatistics() & ~static_cast<unsigned>(kStatLayerInputs);
      if (passes[j]->ChangesKv() && (kv_statistics != 0 || passes[i]->DescribesKv())) {
        Fail("--passes", specs[i].name + " needs calibration of the model it runs on, but " + specs[j].name +
                             " changes K/V before it (run " + specs[i].name + " in a second kvfold convert on the output)");
      }
      if (passes[j]->DescribesKv() && passes[i]->ChangesKv()) {
        Fail("--passes", specs[i].name + " would change the K/V that " + specs[j].name +
                             " has just described (run " + specs[i].name + " first, or in a separate kvfold convert)");
      }
    }
  }
  if (!o.report_path.empty()) needed |= kReportStatistics;

  // Calibration text: always read and hashed (recorded), run through the model when needed.
  const CalibrationInput calib = LoadCalibration(ck, o);
  const Tokenizer& tokenizer = *calib.tokenizer;
  result.calibration_tokens = calib.tokens();
  KvStatistics stats;
  if (needed != 0) {
    const auto t0 = Clock::now();
    stats = Calibrate(ck, calib.windows, tokenizer.bos_id(), needed, o, input_pairs);
    result.timings.push_back({"calibration", Since(t0)});
  }

  ModelDraft draft(ck);
  nlohmann::ordered_json pass_records = nlohmann::ordered_json::array();
  std::string pipeline;  // canonical, as recorded in kvfold.json and the report
  for (std::size_t i = 0; i < passes.size(); ++i) {
    const auto t0 = Clock::now();
    nlohmann::ordered_json record = {{"pass", specs[i].Text()}};
    PassContext ctx{draft, stats, record};
    passes[i]->Run(ctx);
    pass_records.push_back(record);
    pipeline += (pipeline.empty() ? "" : ",") + specs[i].Text();
    result.timings.push_back({specs[i].Text(), Since(t0)});
  }

  // Output: a temporary sibling folder, renamed into place when complete.
  const auto t_write = Clock::now();
  const std::string tmp = o.output + ".tmp." + std::to_string(::getpid());
  if (::mkdir(tmp.c_str(), 0755) != 0) {
    Fail(o.output, std::string("cannot create the output folder: ") + std::strerror(errno));
  }
  try {
    draft.WriteTo(tmp);
    nlohmann::ordered_json meta = {
        {"format_version", 1},
        {"kvfold_version", kVersion},
        {"pipeline", pipeline},
        {"vanilla_checkpoint", draft.config.key_projection_heads == 0 && !draft.config.SharesKv()},
        {"source", {{"path", o.model}, {"sha256", SourceSha256(ck)}}},
        {"calibration",
         {{"file", o.calib_text},
          {"sha256", calib.sha256},
          {"tokens", result.calibration_tokens},
          {"window", o.window}}},
        {"kv_cache_bytes_per_token",
         {{"before", ck.config.KvBytesPerToken(ck.StoredElementBytes())},
          {"after", draft.config.KvBytesPerToken(ck.StoredElementBytes())}}},
        {"passes", pass_records},
    };
    WriteFileAtomically(tmp + "/kvfold.json", meta.dump(2) + "\n");
    if (Exists(o.output)) {  // --force: swap the old folder out only now
      const std::string old = o.output + ".old." + std::to_string(::getpid());
      if (std::rename(o.output.c_str(), old.c_str()) != 0) Fail(o.output, "cannot replace the existing folder");
      if (std::rename(tmp.c_str(), o.output.c_str()) != 0) {
        std::rename(old.c_str(), o.output.c_str());  // put the previous folder back
        Fail(o.output, "cannot move the output into place");
      }
      RemoveTree(old);
    } else if (std::rename(tmp.c_str(), o.output.c_str()) != 0) {
      Fail(o.output, "cannot move the output into place");
    }
  } catch (...) {
    RemoveTree(tmp);
    throw;
  }
  result.timings.push_back({"write", Since(t_write)});

  if (!o.report_path.empty()) {
    nlohmann::ordered_json report = ReportBase(ck, o, pipeline, calib.sha256, result.calibration_tokens);
    report["output"] = {{"path", o.output},
                        {"kv_heads", draft.config.num_key_value_heads},
                        {"kv_bytes_per_token", draft.config.KvBytesPerToken(ck.StoredElementBytes())},
                        {"vanilla_checkpoint", draft.config.key_projection_heads == 0 && !draft.config.SharesKv()}};
    if (!o.eval_text.empty()) {
      const auto t0 = Clock::now();
      const auto windows_eval = EvalWindows(tokenizer, o);
      const Checkpoint out = OpenCheckpoint(o.output);
      const auto original = ReferenceModel::Load(ck, {o.device, o.threads});
      const auto converted = ReferenceModel::Load(out, {o.device, o.threads});
      EvalOptions eo;
      eo.progress = o.progress;
      const ComparisonResult c = CompareModels(*original, *converted, windows_eval, tokenizer.bos_id(), eo);
      report["validation"] = {{"text", o.eval_text},
                              {"windows", c.base.windows},
                              {"tokens_predicted", c.base.tokens_predicted},
                              {"original", PerplexityJson(c.base)},
                              {"converted", PerplexityJson(c.other)},
                              {"kl", c.kl},
                              {"top1_agreement", c.top1_agreement},
                              {"delta_nll", c.delta_nll}};
      result.timings.push_back({"validation", Since(t0)});
    }
    const auto t0 = Clock::now();
    // Spectra for the grouping of the first KV-head pass (else: pairs of KV heads).
    std::int64_t group = ck.config.num_key_value_heads % 2 == 0 ? 2 : 1;
    for (const auto& p : pass_records) {
      if (p.contains("kv_heads_before")) {
        group = p["kv_heads_before"].get<std::int64_t>() / p["kv_heads_after"].get<std::int64_t>();
        break;
      }
    }
    report["spectra"] = KvSpectra(stats, group);
    report["passes"] = pass_records;
    result.timings.push_back({"report", Since(t0)});
    FinishReport(report, result, o, t_start);
  }
  result.total_seconds = Since(t_start);
  return result;
}

}  // namespace kvfold
