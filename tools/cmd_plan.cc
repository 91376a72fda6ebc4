// kvfold plan MODEL --calib TEXT --budget 0.5,0.25,0.125,0.0625 [--json] [--plan-seconds S]
#include <cstdio>
#include <memory>
#include <string>

#include "converter/plan/planner.h"
#include "formats/error.h"
#include "formats/ranks.h"
#include "tools/commands.h"

namespace kvfold {

Command AddPlanCommand(CLI::App& app) {
  struct Args {
    PlanJob job;
    std::string budgets;
    bool json = false;
    bool quiet = false;
  };
  auto a = std::make_shared<Args>();
  PlanJob& o = a->job;
  CLI::App* sub = app.add_subcommand(
      "plan", "Pick the combination of KV reductions with the least KL at each KV budget");
  sub->add_option("MODEL", o.input.model, "HuggingFace model folder")->required();
  sub->add_option("--calib", o.input.calib_text,
                  "Calibration data (text, JSON Lines or .npy): conversions calibrate on its "
                  "start, candidates are scored on the windows after it")
      ->required();
  sub->add_option("--budget", a->budgets,
                  "KV bytes per token as fractions of the source's 16-bit cache, e.g. "
                  "0.5,0.25,0.125,0.0625")
      ->required()
      ->check(BudgetList());
  sub->add_option_function<std::string>(
         "--runtime",
         [a](const std::string& r) { a->job.runtime = ParsePlanRuntime(r, "--runtime"); },
         "What the plans must run in: kvfold (default: every method, kvfold's runtime), llama.cpp "
         "(KV heads x -ctk/-ctv cache types, a GGUF) or vllm (KV heads x fp8 or 16-bit, an hf "
         "folder)")
      ->check(CLI::IsMember({"kvfold", "llama.cpp", "vllm"}));
  sub->add_option("--calib-tokens", o.input.calib_tokens, "Calibration tokens of each conversion")
      ->capture_default_str()
      ->check(CLI::Range(std::int64_t{2}, std::int64_t{1} << 40));
  sub->add_option("--window", o.input.window, "Tokens per window")
      ->capture_default_str()
      ->check(CLI::Range(4, 1 << 20));
  sub->add_option("--score-windows", o.score_windows,
                  "Held-out calibration windows the survivors are scored on")
      ->capture_default_str()
      ->check(CLI::Range(1, 1 << 20));
  sub->add_option("--screen-windows", o.screen_windows,
                  "The first of those, on which every candidate is screened")
      ->capture_default_str()
      ->check(CLI::Range(1, 1 << 20));
  sub->add_option("--survivors", o.survivors, "Candidates per budget scored on every window")
      ->capture_default_str()
      ->check(CLI::Range(1, 1000));
  sub->add_option("--plan-seconds", o.seconds_limit,
                  "Stop scoring after this many seconds (0 = no limit)")
      ->capture_default_str()
      ->check(FiniteRange(0.0, 1e9));
  sub->add_flag("--heal", o.heal,
                "Also try each conversion followed by heal (docs/heal.md); each "
                "candidate's convert_seconds shows what a conversion cost");
  AddComputeOptions(sub, o.compute);
  sub->add_flag("--json", a->json, "Print the plans and every candidate as JSON");
  sub->add_flag("--quiet", a->quiet, "No progress lines on stderr");
  return {sub, [a] {
            a->job.budgets = ParseBudgets(a->budgets);
            a->job.compute.progress = !a->quiet && IsFirstRank();  // one rank speaks for all
            const PlanResult r = RunPlan(a->job);
            if (a->json) {
              std::printf("%s\n", PlanJson(r).dump(2).c_str());
            } else {
              std::fputs(PlanTable(r).c_str(), stdout);
            }
            return 0;
          }};
}

}  // namespace kvfold
