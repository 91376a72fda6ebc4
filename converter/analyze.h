// `kvfold report`: the calibration report of a model without converting it (spectra; with an
// evaluation text its perplexity; with budgets a KV plan per runtime).
#pragma once

#include <vector>

#include "converter/convert.h"
#include "converter/job.h"
#include "converter/plan/plan_candidates.h"

namespace kvfold {

struct ReportJob {
  InputPart input;
  ComputePart compute;
  ReportPart report;  // path required
  // --budget: the budgets a KV plan is made for (converter/plan/planner.h); its candidates
  // calibrate on input.calib_tokens and are scored on the windows after them.
  std::vector<double> plan_budgets;
  // --runtime: the runtimes planned for; the first one's plan is the report's table, every
  // one's frontier is in its chart.
  std::vector<PlanRuntime> plan_runtimes = {PlanRuntime::kKvfold};
};

ConvertResult Analyze(const ReportJob& job);

}  // namespace kvfold
