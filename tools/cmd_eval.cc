// kvfold eval MODEL --text FILE [--window 256] [--max-windows N] [--compare ORIGINAL]
//              [--kv-cache SPEC] [--copy N] [--lckv-iterations M] [--json]
#include <cstdio>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>

#include "converter/eval.h"
#include "formats/ranks.h"
#include "tools/commands.h"

namespace kvfold {
namespace {

struct EvalArgs {
  EvalJob job;
  bool json = false;
  bool quiet = false;
};

// The text form of RunEval's JSON.
void PrintText(const nlohmann::ordered_json& j) {
  const auto str = [&](const nlohmann::ordered_json& v) { return v.get<std::string>(); };
  const int window = j["window"].get<int>();
  std::printf("model        %s\n", str(j["model"]).c_str());
  std::printf("text         %s (%lld tokens; %lld windows of %d, %lld tokens predicted)\n",
              str(j["text"]).c_str(), j["text_tokens"].get<long long>(),
              j["windows"].get<long long>(), window, j["tokens_predicted"].get<long long>());
  if (j.contains("kv_cache")) {
    const auto& c = j["kv_cache"];
    std::printf("kv cache     %s (positions %lld..%d scored)\n", str(c["spec"]).c_str(),
                c["scored_from"].get<long long>(), window - 1);
    std::printf("kv bits      %.2f per element on average over those steps (full cache 16)\n",
                c["average_bits"].get<double>());
  }
  std::printf("ppl          %.4f  (mean NLL %.6f nats)\n", j["ppl"].get<double>(),
              j["mean_nll"].get<double>());
  const std::string reference =
      j.contains("compare") ? str(j["compare"]["reference"]) : std::string("full cache");
  if (j.contains("compare")) {
    const auto& c = j["compare"];
    std::printf("%-12s %.4f  (mean NLL %.6f nats)  %s\n", reference.c_str(), c["ppl"].get<double>(),
                c["mean_nll"].get<double>(), str(c["model"]).c_str());
    std::printf("KL           %.6f nats/token  (%s || model)\n", c["kl"].get<double>(),
                reference.c_str());
    std::printf("top-1        %.2f%% agreement\n", 100.0 * c["top1_agreement"].get<double>());
    std::printf("delta NLL    %+.6f nats/token\n", c["delta_nll"].get<double>());
  }
  if (j.contains("copy")) {
    const auto& c = j["copy"];
    std::printf(
        "copy         %.2f%% next-token accuracy on the repeat (%s: %.2f%%; %d sequences)\n",
        100.0 * c["accuracy"].get<double>(), reference.c_str(),
        100.0 * c["reference_accuracy"].get<double>(), c["sequences"].get<int>());
  }
  if (j.contains("lckv_parallel")) {
    const auto& p = j["lckv_parallel"];
    std::printf(
        "parallel     %.4f ppl with %d iterations: KL %.6f nats/token and %.2f%% top-1 against "
        "token by token\n",
        p["ppl"].get<double>(), p["iterations"].get<int>(), p["kl_from_sequential"].get<double>(),
        100.0 * p["top1_agreement"].get<double>());
  }
  std::printf("speed        %.0f tokens/s on %s\n", j["tokens_per_second"].get<double>(),
              str(j["device"]).c_str());
}

int Run(EvalArgs& a) {
  a.job.compute.progress = !a.quiet;
  const nlohmann::ordered_json j = RunEval(a.job);
  if (a.json) {
    std::printf("%s\n", j.dump(2).c_str());
  } else {
    PrintText(j);
  }
  return 0;
}

}  // namespace

Command AddEvalCommand(CLI::App& app) {
  auto a = std::make_shared<EvalArgs>();
  EvalJob& job = a->job;
  CLI::App* sub = app.add_subcommand(
      "eval", "Perplexity by kvfold-ppl-v1; with --compare, KL/top-1/delta NLL vs the original");
  sub->add_option("MODEL", job.model, "HuggingFace model folder to evaluate")->required();
  sub->add_option("--text", job.text, "UTF-8 evaluation text")->required();
  sub->add_option("--window", job.window, "Tokens per window")
      ->capture_default_str()
      ->check(CLI::Range(2, 1 << 20));
  sub->add_option("--max-windows", job.max_windows, "Use only the first N windows")
      ->check(CLI::PositiveNumber);
  sub->add_option("--compare", job.compare, "Original model to compare against (same tokenizer)");
  sub->add_option(
      "--kv-cache", job.kv_cache,
      "Decode-time cache policy: 'evict<policy=l2-low,keep=0.5,skip=0,1>' (docs/eviction.md) "
      "or 'quant<scheme=kivi,bits=2>' (docs/kv-quant.md); compared with the full cache "
      "after the prefix");
  sub->add_option("--token-logp", job.token_logp,
                  "Also write each window's input ids, targets and log p(target) to this JSON "
                  "file (for comparing another runtime token for token; not with --compare)");
  sub->add_option("--copy", job.copy, "Also run the copy (retrieval) check on N random sequences")
      ->check(CLI::Range(0, 1 << 20));
  sub->add_option(
         "--lckv-iterations", job.lckv_iterations,
         "LCKV models: also run the paper's parallel encoding with M iterations and report how "
         "close it is to exact token-by-token decoding")
      ->check(CLI::Range(0, 1 << 20));
  AddComputeOptions(sub, job.compute);
  sub->add_option(
         "--batch", job.batch,
         "Windows per forward batch (0 = about 2048 tokens, fewer so that each thread gets one)")
      ->check(CLI::Range(0, 1 << 16));
  sub->add_option("--vocab-block", job.vocab_block,
                  "LM head rows read and applied at once when scoring (0 = about 64 MiB of them; "
                  "the vocabulary size = the whole head in float32 at once)")
      ->check(CLI::Range(0, 1 << 30));
  sub->add_flag("--json", a->json, "Print JSON instead of text");
  sub->add_flag("--quiet", a->quiet, "No progress lines on stderr");
  return {sub, [a] { return Run(*a); }};
}

}  // namespace kvfold
