#include "converter/convert.h"

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <future>
#include <nlohmann/json.hpp>
#include <optional>

#include "calib/calibration_input.h"
#include "calib/kv_statistics.h"
#include "calib/text.h"
#include "calib/tokenizer.h"
#include "calib/windows.h"
#include "converter/export/gguf_exporter.h"
#include "converter/export/gguf_model.h"
#include "converter/job_support.h"
#include "converter/layer_loop.h"
#include "converter/passes/model_draft.h"
#include "converter/passes/pass.h"
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
#include "runtime_check/forward_flop.h"
#include "runtime_check/reference_model.h"

namespace kvfold {

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

// The report goes into the output folder when asked to be written there (`--report OUT/x.html`
// with OUT the -o folder): it is then part of the atomic output.
bool ReportInsideOutput(const ConvertJob& o) {
  return !o.report.path.empty() && Resolved(o.report.path).parent_path() == Resolved(o.output.path);
}

nlohmann::ordered_json KvfoldJson(const ConvertJob& o, const Checkpoint& ck,
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
      {"source", {{"path", o.input.model}, {"sha256", source_sha256}}},
      {"calibration",
       {{"file", o.input.calib_text},
        {"sha256", calib.sha256},
        {"tokens", calib.tokens()},
        {"window", o.input.window},
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
void AddPlan(const ConvertJob& o, nlohmann::ordered_json& kvfold_json) {
  if (!o.plan_json.empty()) kvfold_json["plan"] = nlohmann::ordered_json::parse(o.plan_json);
}

// --reproduce: the inputs must be the bytes the recorded conversion read.
void CheckRecordedInputs(const ConvertJob& o, const std::string& source_sha256,
                         const std::string& calib_sha256) {
  if (!o.expected_source_sha256.empty() && source_sha256 != o.expected_source_sha256) {
    Fail(o.input.model, "is not the checkpoint the recorded conversion read (its SHA-256 differs)");
  }
  if (!o.expected_calib_sha256.empty() && calib_sha256 != o.expected_calib_sha256) {
    Fail(o.input.calib_text,
         "is not the calibration text the recorded conversion read (its SHA-256 differs)");
  }
}

// --format gguf: one file llama.cpp runs; what it cannot represent is refused before any work.
void CheckGgufConvert(const ConvertJob& o, const Checkpoint& ck) {
  GgufArchitecture(ck.config, o.input.model);
  if (!o.report.path.empty() && !o.report.eval_text.empty()) {
    Fail("--format gguf",
         "the report's validation reads an hf output: convert to hf with "
         "--report, then kvfold export it");
  }
  if (ReportInsideOutput(o)) Fail(o.report.path, "a GGUF output is a file, not a folder");
  CheckGgufOutputPath(o.output.path, o.output.force);
}

// The report's validation section: the original against the converted model in `converted_dir`.
nlohmann::ordered_json Validation(const ConvertJob& o, const Checkpoint& ck,
                                  const std::string& converted_dir, const Tokenizer& tokenizer) {
  const auto windows_eval = EvalWindows(tokenizer, o.input, o.report, ck.config.vocab_size,
                                        ThreadsPerRank(o.compute.threads));
  const Checkpoint out = OpenCheckpoint(converted_dir);
  const auto original = ReferenceModel::Load(ck, StreamedRuntime(o.compute));
  const auto converted = ReferenceModel::Load(out, StreamedRuntime(o.compute));
  EvalOptions eo;
  eo.progress = o.compute.progress;
  const ComparisonResult c =
      CompareModels(*original, *converted, windows_eval, tokenizer.bos_id(), eo);
  return {{"text", o.report.eval_text},
          {"windows", c.base.windows},
          {"tokens_predicted", c.base.tokens_predicted},
          {"original", PerplexityJson(c.base)},
          {"converted", PerplexityJson(c.other)},
          {"kl", c.kl},
          {"top1_agreement", c.top1_agreement},
          {"delta_nll", c.delta_nll}};
}

}  // namespace

ConvertResult Convert(const ConvertJob& o) {
  const auto t_start = Clock::now();
  ConvertResult result;

  // Everything that can be refused is refused before any work.
  if (o.output.path.empty()) Fail("-o", "an output folder is required");
  CheckParts(o.input, o.compute, o.report);
  CheckApartFromInput(o.input.model, o.output.path, "output folder");
  if (!o.report.path.empty()) CheckApartFromInput(o.input.model, o.report.path, "report");
  const Checkpoint ck = OpenCheckpoint(o.input.model);
  if (ck.config.SharesKv()) {
    Fail(o.input.model,
         "its layers already share K/V (layer_types); kvfold convert reads models without "
         "cross-layer sharing");
  }
  Pipeline pipeline = CreatePipeline(o.passes, ck.config);
  CheckPassOrder(pipeline, CalibratesOnConverted(pipeline, o));
  const bool gguf = o.output.format.format == OutputFormat::kGguf;
  if (gguf) CheckGgufConvert(o, ck);
  for (const auto& pass : pipeline.passes) {
    const std::string why = pass->Unexportable(o.output.format.format);
    if (!why.empty()) Fail(gguf ? "--format gguf" : "--format hf", why);
  }
  const bool passes_calibrate = pipeline.needed != 0;  // a report alone does not shape the output
  const bool report_inside = ReportInsideOutput(o);
  if (!o.report.path.empty() && !report_inside &&
      IsWithin(Resolved(o.report.path), Resolved(o.output.path))) {
    Fail(o.report.path,
         "a report inside the output folder must be directly in it (e.g. OUT/report.html)");
  }
  if (!o.report.path.empty() && !report_inside) CheckCanWrite(o.report.path, "report");
  // Under mpirun every rank computes the conversion and the first writes it (docs/mpi.md).
  const bool writes = o.output.every_rank_writes || IsFirstRank();
  std::optional<StagedFolder> staging;
  if (writes && !gguf)
    staging.emplace(o.output.path, o.output.force);  // an unwritable -o fails here

  // The source's SHA-256 (kvfold.json) is hashed once, on a thread of its own, beside the
  // calibration text's tokenisation and the conversion (1.5 s of one core at the 1.1B shape); a
  // recorded hash to match or several ranks to compare need it before any work.
  const std::shared_future<std::string> source_sha256 =
      std::async(std::launch::async, [&ck] { return SourceSha256(ck); }).share();
  // Calibration text: always read and hashed (recorded), run through the model when needed.
  const CalibrationInput calib = LoadCalibration(ck, o.input, ThreadsPerRank(o.compute.threads));
  const bool hash_first = !o.expected_source_sha256.empty() || RankCount() > 1;
  const std::string early_sha256 = hash_first ? source_sha256.get() : "";
  CheckRecordedInputs(o, early_sha256, calib.sha256);
  RequireSameOnEveryRank(RankInputs("convert", o.input, pipeline.Text(), o.calibrate_on,
                                    !o.report.path.empty(), early_sha256, calib.sha256));
  const Tokenizer& tokenizer = *calib.tokenizer;
  result.calibration_tokens = calib.tokens();
  ModelDraft draft(ck);
  if (writes) {  // layer-local pipelines write each layer as it is done
    draft.OpenOutput(MakeExporter(gguf ? o.output.path : staging->path(), ck, o.output.format));
  } else {
    draft.DiscardOutput();
  }
  const std::uint64_t joined_before = BytesJoined();  // --kv-budget's planner joined its own
  const std::uint64_t flop_before = ForwardFlop();    // not the planner's candidates
  const PassesRun run =
      RunPasses(pipeline, draft, {calib.windows, tokenizer.bos_id(), o.input.window}, o,
                !o.report.path.empty(), result.timings);
  result.forward_flop = ForwardFlop() - flop_before;
  if (RankCount() > 1 && o.compute.progress) {  // sizes a cluster (docs/mpi.md)
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
    if (o.compute.progress)
      std::fprintf(stderr, "kvfold: not copied from %s: %s\n", o.input.model.c_str(), n.c_str());
  }
  nlohmann::ordered_json meta =
      KvfoldJson(o, ck, source_sha256.get(), draft, pipeline.Text(), calib,
                 passes_calibrate ? threads : 0, run.activations, not_copied, pass_records);
  AddPlan(o, meta);
  draft.FinishOutput(&meta);
  result.timings.push_back({"write", Since(t_write)});

  nlohmann::ordered_json report;
  if (!o.report.path.empty()) {
    report = ReportBase(ck, o.input, pipeline.Text(), calib.sha256, result.calibration_tokens);
    report["output"] = {
        {"path", o.output.path},
        {"kv_heads", KvHeadsJson(draft.config)},
        {"kv_bytes_per_token", draft.config.KvBytesPerToken(ck.StoredElementBytes())},
        {"vanilla_checkpoint", draft.config.key_projection_heads == 0 && !draft.config.SharesKv()}};
    if (!o.report.eval_text.empty()) {
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
                 staging->path() + "/" + Resolved(o.report.path).filename().string(), t_start);
  }
  WaitForAllRanks();  // a rank lost until here leaves no output
  if (staging) staging->Commit();
  if (!o.report.path.empty() && !report_inside)
    FinishReport(report, result, o.report.path, t_start);
  result.total_seconds = Since(t_start);
  return result;
}

void ConvertToFolder(const InputPart& input, const PipelineSpec& passes, const std::string& dir,
                     const ComputePart& compute) {
  ConvertJob job;
  job.input = input;
  job.passes = passes;
  job.output.path = dir;
  job.output.every_rank_writes = true;  // each rank reads the result from its own folder
  job.compute = compute;
  job.compute.progress = false;
  Convert(job);
}

}  // namespace kvfold
