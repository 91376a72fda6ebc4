// kvfold convert MODEL --calib TEXT --passes 'PIPELINE' -o OUT [--force] [--time-passes]
// kvfold convert --print-passes
#include <algorithm>
#include <cstdio>
#include <memory>
#include <optional>
#include <string>

#include "converter/analyze.h"
#include "converter/convert.h"
#include "converter/passes/pass.h"
#include "converter/plan/planner.h"
#include "formats/error.h"
#include "formats/ranks.h"
#include "formats/spec_syntax.h"
#include "runtime_check/data_parallel.h"
#include "tools/commands.h"

namespace kvfold {

CLI::Validator ThreadCount() {
  const int most = MaxCpuThreads();
  return CLI::Range(0, most).description("0 (all cores) to " + std::to_string(most));
}

CLI::Validator FiniteRange(double lo, double hi) {
  const std::string range = FormatNumber(lo) + " to " + FormatNumber(hi);
  return CLI::Validator(
      [lo, hi, range](std::string& text) -> std::string {
        const std::optional<double> x = ParseSpecNumber(text);  // the whole text, finite
        if (x && *x >= lo && *x <= hi) return "";
        return "'" + text + "' is not a number from " + range;
      },
      "a number from " + range);
}

CLI::Validator BudgetList() {
  return CLI::Validator(
      [](std::string& text) -> std::string {
        try {
          ParseBudgets(text);
        } catch (const Error& e) {
          const std::string why = e.what();  // "--budget: ...": CLI11 names the option itself
          return why.rfind("--budget: ", 0) == 0 ? why.substr(10) : why;
        }
        return "";
      },
      "fractions in (0, 1], e.g. 0.5,0.25");
}

void AddHiddenMemoryOption(CLI::App* sub, std::uint64_t* bytes) {
  sub->add_option_function<std::uint64_t>(
         "--hidden-memory", [bytes](std::uint64_t mib) { *bytes = mib << 20; },
         "MiB of hidden states kept in memory per model, and of o_proj refit contexts (default " +
             std::to_string(kDefaultHiddenMemoryBytes >> 20) +
             "); the rest spill to a temporary file in $TMPDIR (or /tmp)")
      ->check(CLI::Range(std::uint64_t{0}, std::uint64_t{1} << 30));
}

void AddRankTimeoutOption(CLI::App* sub) {
  sub->add_option_function<double>(
         "--rank-timeout", [](double seconds) { SetRankTimeout(seconds); },
         "Under mpirun: seconds a rank waits for another before it ends the run naming the "
         "missing rank (default " +
             std::to_string(static_cast<int>(kDefaultRankTimeoutSeconds)) + "; 0 = forever)")
      ->check(FiniteRange(0.0, 1e9));
}

void AddComputeOptions(CLI::App* sub, ComputePart& compute) {
  sub->add_option("--device", compute.device, "cpu, cuda or cuda:N")->capture_default_str();
  sub->add_option("--threads", compute.threads, "CPU threads (0 = all cores)")
      ->check(ThreadCount());
  AddHiddenMemoryOption(sub, &compute.hidden_memory_bytes);
  AddRankTimeoutOption(sub);
}

namespace {

// With --runtime llama.cpp the output is the GGUF llama.cpp runs; with vllm an hf folder.
void SetArtifact(PlanRuntime runtime, bool format_given, OutputPart& output) {
  const OutputFormat wanted =
      runtime == PlanRuntime::kLlamaCpp ? OutputFormat::kGguf : OutputFormat::kHf;
  if (format_given && output.format.format != wanted) {
    Fail("--runtime", std::string(PlanRuntimeName(runtime)) + " runs " +
                          (wanted == OutputFormat::kGguf ? "a GGUF file" : "an hf folder") +
                          ": drop --format");
  }
  output.format.format = wanted;
}

// --kv-budget: the plan for `budget` (scored on the calibration windows after calib_tokens)
// becomes o.passes and is recorded. A plan that changes no weights has nothing to convert.
// Returns the plan's serve command for the output.
std::string PlanPasses(double budget, PlanRuntime runtime, bool format_given, ConvertJob& o) {
  if (!o.passes.empty())
    Fail("--kv-budget", "not used with --passes (the plan chooses the passes)");
  if (o.input.model.empty() || o.input.calib_text.empty())
    Fail("--kv-budget", "needs MODEL and --calib");
  SetArtifact(runtime, format_given, o.output);
  const PlanResult r = RunPlan({o.input, o.compute, {budget}, runtime});
  const nlohmann::ordered_json plan = PlanJson(r, o.output.path)["plans"][0];
  if (r.plans[0].candidate < 0)
    Fail("--kv-budget", "no candidate fits " + FormatNumber(budget) + " of the KV cache");
  const PlanCandidate& chosen = r.candidates[static_cast<std::size_t>(r.plans[0].candidate)];
  const std::string cache = chosen.kv_cache.empty() ? "(the full cache)" : chosen.kv_cache;
  if (chosen.passes.empty()) {
    // Nothing to convert: how to serve the model as it is.
    std::string how = "serve " + o.input.model + " as it is with --kv-cache '" + cache + "'";
    if (runtime == PlanRuntime::kLlamaCpp) {
      how = "kvfold export " + o.input.model + " -o " + o.output.path + ", then " +
            plan["serve"].get<std::string>();
    } else if (runtime == PlanRuntime::kVllm) {
      how = PlanJson(r, o.input.model)["plans"][0]["serve"].get<std::string>();
    }
    Fail("--kv-budget", "the best plan changes no weights: " + how + " (bytes " +
                            plan["bytes_fraction"].dump() + ", KL " + plan["kl"].dump() + ")");
  }
  o.passes = chosen.passes;
  o.plan_json =
      nlohmann::json::parse(plan.dump()).dump();  // keys sorted, as --reproduce reads them back
  if (o.compute.progress)
    std::fprintf(stderr, "kvfold: plan for %g: --passes '%s', --kv-cache %s\n", budget,
                 PipelineText(o.passes).c_str(), cache.c_str());
  return plan["serve"].get<std::string>();
}

struct ConvertArgs {
  ConvertJob job;
  std::string passes;  // --passes, parsed when the command runs
  bool print_passes = false;
  bool time_passes = false;
  bool quiet = false;
  std::string reproduce;  // a kvfold.json
  double kv_budget = 0;   // --kv-budget: plan, then convert with the plan's passes
  PlanRuntime runtime = PlanRuntime::kKvfold;  // --runtime: what the plan must run in
  bool format_given = false;
};

int RunConvert(ConvertArgs& a) {
  if (a.print_passes) {
    std::fputs(PrintPasses().c_str(), stdout);
    return 0;
  }
  ConvertJob& job = a.job;
  if (!a.passes.empty()) job.passes = ParsePipeline(a.passes);
  if (!a.reproduce.empty()) {
    if (!a.passes.empty())
      Fail("--passes", "not used with --reproduce (the recorded pipeline runs)");
    job = ReproduceJob(a.reproduce, job);
  }
  if (job.input.model.empty()) Fail("convert", "MODEL is required");
  if (job.input.calib_text.empty()) Fail("convert", "--calib TEXT is required");
  job.compute.progress = !a.quiet && IsFirstRank();  // one rank speaks for all
  job.output.format.progress = job.compute.progress;
  if (a.runtime != PlanRuntime::kKvfold && a.kv_budget <= 0)
    Fail("--runtime", "goes with --kv-budget (the plan is made for that runtime)");
  std::string serve;  // the plan's command that runs the output
  if (a.kv_budget > 0) serve = PlanPasses(a.kv_budget, a.runtime, a.format_given, job);
  if (job.passes.empty()) Fail("convert", "--passes is required (see --print-passes)");
  if (!job.report.eval_text.empty() && job.report.path.empty())
    Fail("--eval", "only used with --report (use kvfold eval to evaluate a model)");
  const ConvertResult r = Convert(job);
  if (a.time_passes && IsFirstRank()) {
    for (const auto& t : r.timings)
      std::fprintf(stderr, "time  %-48s %8.3f s\n", t.pass.c_str(), t.seconds);
    std::fprintf(stderr, "time  %-48s %8.3f s\n", "total", r.total_seconds);
    std::fprintf(stderr, "time  %-48s %8.3f TFLOP, %.1f GFLOP/s of the total\n", "forwards",
                 1e-12 * double(r.forward_flop),
                 1e-9 * double(r.forward_flop) / std::max(r.total_seconds, 1e-9));
  }
  std::printf("wrote %s\n", job.output.path.c_str());
  if (!serve.empty()) std::printf("serve: %s\n", serve.c_str());
  if (!job.report.path.empty()) std::printf("wrote %s\n", job.report.path.c_str());
  return 0;
}

// --calib-tokens, --window: what the job reads of the calibration text.
void AddInputOptions(CLI::App* sub, InputPart& input) {
  sub->add_option("--calib-tokens", input.calib_tokens, "Calibration tokens")
      ->capture_default_str()
      ->check(CLI::Range(std::int64_t{2}, std::int64_t{1} << 40));
  sub->add_option("--window", input.window, "Tokens per calibration window")
      ->capture_default_str()
      ->check(CLI::Range(2, 1 << 20));
}

}  // namespace

Command AddConvertCommand(CLI::App& app) {
  auto a = std::make_shared<ConvertArgs>();
  ConvertJob& job = a->job;
  CLI::App* sub =
      app.add_subcommand("convert", "Run a pipeline of passes and write a new checkpoint");
  sub->add_option("MODEL", job.input.model, "HuggingFace model folder to convert");
  sub->add_option("--calib", job.input.calib_text,
                  "Calibration data: UTF-8 text, JSON Lines (text or token ids) or .npy ids");
  sub->add_option("--passes", a->passes, "Pipeline, e.g. 'gqa-svd<kv-heads=2,rope=commute>'");
  sub->add_option("-o,--output", job.output.path,
                  "Output folder, or file with --format gguf (refused if it exists, unless "
                  "--force)");
  sub->add_option_function<std::string>(
         "--format",
         [a](const std::string& f) {
           a->job.output.format.format = ParseOutputFormat(f, "--format");
           a->format_given = true;
         },
         "Output: hf (default: a HuggingFace folder) or gguf (one file for llama.cpp)")
      ->check(CLI::IsMember({"hf", "gguf"}));
  sub->add_option("--dtype", job.output.format.dtype,
                  "With --format gguf: f32, f16 or bf16 weights (default: the source's)")
      ->check(CLI::IsMember({"f32", "f16", "bf16"}));
  AddInputOptions(sub, job.input);
  AddComputeOptions(sub, job.compute);
  sub->add_option("--calibrate-on", job.calibrate_on,
                  "Activations layer-local passes are calibrated on: converted (each layer on what "
                  "the converted layers below it produce) or source")
      ->check(CLI::IsMember({"converted", "source"}))
      ->capture_default_str();
  sub->add_flag("--force", job.output.force, "Replace an existing output folder");
  sub->add_option("--report", job.report.path,
                  "Write a calibration report (HTML, and JSON beside it)");
  sub->add_option("--eval", job.report.eval_text,
                  "Evaluation text for the report's validation section");
  sub->add_option("--eval-windows", job.report.eval_windows, "Windows of the evaluation text")
      ->capture_default_str()
      ->check(CLI::Range(1, 1 << 20));
  sub->add_option(
      "--reproduce", a->reproduce,
      "Rerun the conversion recorded in an output's kvfold.json (its pipeline, calibration and "
      "threads; MODEL and --calib default to the recorded paths, whose SHA-256 must match)");
  sub->add_option("--kv-budget", a->kv_budget,
                  "Instead of --passes: run kvfold plan for this fraction of the source's 16-bit "
                  "KV cache and convert with the best plan's passes (recorded in kvfold.json with "
                  "its --kv-cache spec)")
      ->check(BudgetList());
  sub->add_option_function<std::string>(
         "--runtime", [a](const std::string& r) { a->runtime = ParsePlanRuntime(r, "--runtime"); },
         "With --kv-budget: the runtime the plan must run in: kvfold (default), llama.cpp (writes "
         "a GGUF) or vllm (an hf folder); the serve command is printed and recorded")
      ->check(CLI::IsMember({"kvfold", "llama.cpp", "vllm"}));
  sub->add_flag("--print-passes", a->print_passes, "List the passes and their parameters");
  sub->add_flag("--time-passes", a->time_passes, "Print the time of calibration and each pass");
  sub->add_flag("--quiet", a->quiet, "No progress lines on stderr");
  return {sub, [a] { return RunConvert(*a); }};
}

Command AddReportCommand(CLI::App& app) {
  auto o = std::make_shared<ReportJob>();
  CLI::App* sub =
      app.add_subcommand("report", "Calibration report of a model without converting it");
  sub->add_option("MODEL", o->input.model, "HuggingFace model folder")->required();
  sub->add_option("--calib", o->input.calib_text,
                  "Calibration data: UTF-8 text, JSON Lines (text or token ids) or .npy ids")
      ->required();
  sub->add_option("--eval", o->report.eval_text, "Evaluation text (adds perplexity)");
  sub->add_option("-o,--output", o->report.path, "Report HTML path (JSON written beside it)")
      ->required();
  sub->add_option("--calib-tokens", o->input.calib_tokens, "Calibration tokens")
      ->capture_default_str()
      ->check(CLI::Range(std::int64_t{2}, std::int64_t{1} << 40));
  sub->add_option("--eval-windows", o->report.eval_windows, "Windows of the evaluation text")
      ->capture_default_str()
      ->check(CLI::Range(1, 1 << 20));
  AddComputeOptions(sub, o->compute);
  auto budgets = std::make_shared<std::string>();
  sub->add_option("--budget", *budgets,
                  "Add a KV budget plan (as kvfold plan) for these fractions of the 16-bit "
                  "KV cache, e.g. 0.5,0.25; its candidates calibrate on --calib-tokens and are "
                  "scored on the windows after them")
      ->check(BudgetList());
  auto runtimes = std::make_shared<std::vector<std::string>>();
  sub->add_option("--runtime", *runtimes,
                  "With --budget: plan for these runtimes (kvfold, llama.cpp, vllm; default "
                  "kvfold): the first one's plan is the table, every one's frontier is in the "
                  "chart")
      ->delimiter(',')
      ->check(CLI::IsMember({"kvfold", "llama.cpp", "vllm"}));
  auto quiet = std::make_shared<bool>(false);
  sub->add_flag("--quiet", *quiet, "No progress lines on stderr");
  return {sub, [o, budgets, runtimes, quiet] {
            if (!budgets->empty()) o->plan_budgets = ParseBudgets(*budgets);
            if (!runtimes->empty()) o->plan_runtimes.clear();
            for (const std::string& r : *runtimes)
              o->plan_runtimes.push_back(ParsePlanRuntime(r, "--runtime"));
            o->compute.progress = !*quiet && IsFirstRank();  // one rank speaks for all
            Analyze(*o);
            std::printf("wrote %s\n", o->report.path.c_str());
            return 0;
          }};
}

}  // namespace kvfold
