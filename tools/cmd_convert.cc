// kvfold convert MODEL --calib TEXT --passes 'PIPELINE' -o OUT [--force] [--time-passes]
// kvfold convert --print-passes
#include <cstdio>
#include <memory>
#include <string>

#include "converter/convert.h"
#include "converter/passes/pass.h"
#include "formats/error.h"
#include "runtime_check/data_parallel.h"
#include "tools/commands.h"

namespace kvfold {

CLI::Validator ThreadCount() {
  const int most = MaxCpuThreads();
  return CLI::Range(0, most).description("0 (all cores) to " + std::to_string(most));
}

void AddHiddenMemoryOption(CLI::App* sub, std::uint64_t* bytes) {
  sub->add_option_function<std::uint64_t>(
         "--hidden-memory", [bytes](std::uint64_t mib) { *bytes = mib << 20; },
         "MiB of hidden states kept in memory per model (default " + std::to_string(kDefaultHiddenMemoryBytes >> 20) +
             "); the rest spill to a temporary file in $TMPDIR (or /tmp)")
      ->check(CLI::Range(std::uint64_t{0}, std::uint64_t{1} << 30));
}

Command AddConvertCommand(CLI::App& app) {
  struct Args {
    ConvertOptions options;
    bool print_passes = false;
    bool time_passes = false;
    bool quiet = false;
    std::string reproduce;  // a kvfold.json
  };
  auto a = std::make_shared<Args>();
  CLI::App* sub = app.add_subcommand("convert", "Run a pipeline of passes and write a new checkpoint");
  sub->add_option("MODEL", a->options.model, "HuggingFace model folder to convert");
  sub->add_option("--calib", a->options.calib_text, "Calibration data: UTF-8 text, JSON Lines (text or token ids) or .npy ids");
  sub->add_option("--passes", a->options.passes, "Pipeline, e.g. 'gqa-svd<kv-heads=2,rope=commute>'");
  sub->add_option("-o,--output", a->options.output, "Output folder (refused if it exists, unless --force)");
  sub->add_option("--calib-tokens", a->options.calib_tokens, "Calibration tokens")->capture_default_str()
      ->check(CLI::Range(std::int64_t{2}, std::int64_t{1} << 40));
  sub->add_option("--window", a->options.window, "Tokens per calibration window")->capture_default_str()
      ->check(CLI::Range(2, 1 << 20));
  sub->add_option("--device", a->options.device, "cpu, cuda or cuda:N")->capture_default_str();
  sub->add_option("--threads", a->options.threads, "CPU threads (0 = all cores)")->check(ThreadCount());
  AddHiddenMemoryOption(sub, &a->options.hidden_memory_bytes);
  sub->add_option("--calibrate-on", a->options.calibrate_on,
                  "Activations layer-local passes are calibrated on: converted (each layer on what the converted "
                  "layers below it produce) or source")
      ->check(CLI::IsMember({"converted", "source"}))
      ->capture_default_str();
  sub->add_flag("--force", a->options.force, "Replace an existing output folder");
  sub->add_option("--report", a->options.report_path, "Write a calibration report (HTML, and JSON beside it)");
  sub->add_option("--eval", a->options.eval_text, "Evaluation text for the report's validation section");
  sub->add_option("--eval-windows", a->options.eval_windows, "Windows of the evaluation text")->capture_default_str()
      ->check(CLI::Range(1, 1 << 20));
  sub->add_option("--reproduce", a->reproduce,
                  "Rerun the conversion recorded in an output's kvfold.json (its pipeline, calibration and "
                  "threads; MODEL and --calib default to the recorded paths, whose SHA-256 must match)");
  sub->add_flag("--print-passes", a->print_passes, "List the passes and their parameters");
  sub->add_flag("--time-passes", a->time_passes, "Print the time of calibration and each pass");
  sub->add_flag("--quiet", a->quiet, "No progress lines on stderr");
  return {sub, [a] {
    if (a->print_passes) {
      std::fputs(PrintPasses().c_str(), stdout);
      return 0;
    }
    if (!a->reproduce.empty()) {
      if (!a->options.passes.empty()) Fail("--passes", "not used with --reproduce (the recorded pipeline runs)");
      a->options = ReproduceOptions(a->reproduce, a->options);
    }
    if (a->options.model.empty()) Fail("convert", "MODEL is required");
    if (a->options.calib_text.empty()) Fail("convert", "--calib TEXT is required");
    if (a->options.passes.empty()) Fail("convert", "--passes is required (see --print-passes)");
    if (!a->options.eval_text.empty() && a->options.report_path.empty()) {
      Fail("--eval", "only used with --report (use kvfold eval to evaluate a model)");
    }
    a->options.progress = !a->quiet;
    const ConvertResult r = Convert(a->options);
    if (a->time_passes) {
      for (const auto& t : r.timings) std::fprintf(stderr, "time  %-48s %8.3f s\n", t.pass.c_str(), t.seconds);
      std::fprintf(stderr, "time  %-48s %8.3f s\n", "total", r.total_seconds);
    }
    std::printf("wrote %s\n", a->options.output.c_str());
    if (!a->options.report_path.empty()) std::printf("wrote %s\n", a->options.report_path.c_str());
    return 0;
  }};
}

Command AddReportCommand(CLI::App& app) {
  auto o = std::make_shared<ConvertOptions>();
  CLI::App* sub = app.add_subcommand("report", "Calibration report of a model without converting it");
  sub->add_option("MODEL", o->model, "HuggingFace model folder")->required();
  sub->add_option("--calib", o->calib_text, "Calibration data: UTF-8 text, JSON Lines (text or token ids) or .npy ids")->required();
  sub->add_option("--eval", o->eval_text, "Evaluation text (adds perplexity)");
  sub->add_option("-o,--output", o->report_path, "Report HTML path (JSON written beside it)")->required();
  sub->add_option("--calib-tokens", o->calib_tokens, "Calibration tokens")->capture_default_str()
      ->check(CLI::Range(std::int64_t{2}, std::int64_t{1} << 40));
  sub->add_option("--eval-windows", o->eval_windows, "Windows of the evaluation text")->capture_default_str()
      ->check(CLI::Range(1, 1 << 20));
  sub->add_option("--threads", o->threads, "CPU threads (0 = all cores)")->check(ThreadCount());
  AddHiddenMemoryOption(sub, &o->hidden_memory_bytes);
  return {sub, [o] {
    Analyze(*o);
    std::printf("wrote %s\n", o->report_path.c_str());
    return 0;
  }};
}

}  // namespace kvfold
