// kvfold plan: which combination of kvfold's KV-cache reductions loses the least at each KV
// budget (docs/plan.md). Every candidate (plan_candidates.h) is scored by its KL against the
// source's full cache on calibration windows the conversions never saw: first on a few windows
// (screening, every candidate), then the best few per budget on all of them.
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "converter/job.h"
#include "converter/plan/plan_candidates.h"
#include "runtime_check/reference_model.h"

namespace kvfold {

// `kvfold plan`: the input model and calibration text, the budgets and the runtime.
struct PlanJob {
  // Each candidate conversion calibrates on input.calib_tokens (the text's start).
  InputPart input = {"", "", 16384, 256};
  ComputePart compute;
  std::vector<double> budgets;  // fractions of the source's 16-bit KV cache, in (0, 1]
  PlanRuntime runtime = PlanRuntime::kKvfold;  // what the plans must run in (--runtime)
  int score_windows = 8;                       // held-out windows after the calibration tokens
  int screen_windows = 2;                      // the first of those, for screening every candidate
  int survivors = 3;         // per budget: the best screened, scored on every window
  double seconds_limit = 0;  // --plan-seconds: no new scoring after it (0 = none)
  bool heal = false;         // --heal: every conversion also followed by heal
};

struct BudgetPlan {
  double budget = 0;
  int candidate = -1;  // index into PlanResult::candidates; -1 when nothing scored fits
};

struct PlanResult {
  PlanRuntime runtime = PlanRuntime::kKvfold;
  std::vector<PlanStructure> structures;
  std::vector<RefusedStructure> refused;  // not tried: a pass refuses the model (with why)
  std::vector<PlanCache> caches;
  std::vector<PlanCandidate> candidates;
  std::vector<double> convert_seconds;  // per structure: its conversion's wall time (NaN: none)
  std::vector<BudgetPlan> plans;
  std::int64_t calibration_tokens = 0;
  int window = 0, score_windows = 0, screen_windows = 0;
  std::int64_t scored_from = 0;  // window positions from here on are scored
  std::vector<double> layer_kl;  // per layer: screening KL of a 2-bit cache there alone
  std::vector<std::int64_t>
      layers_by_sensitivity;  // most sensitive first (per-layer caches protect these)
  double seconds = 0;
  bool time_limited = false;  // --plan-seconds stopped scoring: some candidates were not scored
};

// Throws Error naming the input (model, --calib, --budget) for bad input.
PlanResult RunPlan(const PlanJob& job);

// {"runtime", "plans": [{"budget", "passes", "kv_cache", "bytes_fraction", "kl", "family",
// "runtime", "artifact", "kv_heads", "cache_k", "cache_v", "serve"}], "candidates": [...], ...};
// `output` names the artifact in the serve commands (OUT / OUT.gguf when empty).
nlohmann::ordered_json PlanJson(const PlanResult& result, const std::string& output = "");
// The plans as a text table, one line per budget.
std::string PlanTable(const PlanResult& result);
// Parses "0.5,0.25": each in (0, 1]; throws Error("--budget: ...").
std::vector<double> ParseBudgets(const std::string& text);

}  // namespace kvfold
