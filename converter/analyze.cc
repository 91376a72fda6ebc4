#include "converter/analyze.h"

#include "converter/job_support.h"
#include "converter/layer_loop.h"
#include "converter/plan/planner.h"
#include "converter/report/report.h"
#include "formats/error.h"
#include "formats/ranks.h"

namespace kvfold {
namespace {

// The report's validation section: the model's perplexity on the evaluation text.
nlohmann::ordered_json Validation(const ReportJob& o, const Checkpoint& ck,
                                  const Tokenizer& tokenizer) {
  const auto windows_eval = EvalWindows(tokenizer, o.input, o.report, ck.config.vocab_size,
                                        ThreadsPerRank(o.compute.threads));
  const auto model = ReferenceModel::Load(ck, StreamedRuntime(o.compute));
  EvalOptions eo;
  eo.progress = o.compute.progress;
  const PerplexityResult p = EvaluatePerplexity(*model, windows_eval, tokenizer.bos_id(), eo);
  return {{"text", o.report.eval_text},
          {"windows", p.windows},
          {"tokens_predicted", p.tokens_predicted},
          {"original", PerplexityJson(p)}};
}

// One plan per runtime: the first is the report's "plan", the others its "other_runtimes".
nlohmann::ordered_json Plans(const ReportJob& o) {
  nlohmann::ordered_json out;
  for (const PlanRuntime runtime : o.plan_runtimes) {
    nlohmann::ordered_json plan = PlanJson(RunPlan({o.input, o.compute, o.plan_budgets, runtime}));
    if (out.is_null()) {
      out = std::move(plan);
    } else {
      out["other_runtimes"].push_back(std::move(plan));
    }
  }
  return out;
}

}  // namespace

ConvertResult Analyze(const ReportJob& o) {
  const auto t_start = Clock::now();
  ConvertResult result;
  if (o.report.path.empty()) Fail("report", "-o REPORT.html is required");
  CheckParts(o.input, o.compute, o.report);
  CheckApartFromInput(o.input.model, o.report.path, "report");
  CheckCanWrite(o.report.path, "report");
  const Checkpoint ck = OpenCheckpoint(o.input.model);
  const CalibrationInput calib = LoadCalibration(ck, o.input, ThreadsPerRank(o.compute.threads));
  const std::string source_sha256 = RankCount() > 1 ? SourceSha256(ck) : "";  // several ranks
  RequireSameOnEveryRank(
      RankInputs("report", o.input, "", "converted", true, source_sha256, calib.sha256));
  const Tokenizer& tokenizer = *calib.tokenizer;
  result.calibration_tokens = calib.tokens();
  auto t0 = Clock::now();
  const KvStatistics stats = Calibrate(ck, {calib.windows, tokenizer.bos_id(), o.input.window},
                                       kReportStatistics, o.compute);
  result.timings.push_back({"calibration", Since(t0)});
  nlohmann::ordered_json report =
      ReportBase(ck, o.input, "", calib.sha256, result.calibration_tokens);
  const std::int64_t kv = ck.config.num_key_value_heads;
  report["spectra"] = KvSpectra(stats, kv % 2 == 0 ? 2 : 1);  // what halving the KV heads keeps
  if (!o.report.eval_text.empty()) {
    t0 = Clock::now();
    report["validation"] = Validation(o, ck, tokenizer);
    result.timings.push_back({"validation", Since(t0)});
  }
  if (!o.plan_budgets.empty()) {
    t0 = Clock::now();
    report["plan"] = Plans(o);
    result.timings.push_back({"plan", Since(t0)});
  }
  FinishReport(report, result, o.report.path, t_start);
  result.total_seconds = Since(t_start);
  return result;
}

}  // namespace kvfold
