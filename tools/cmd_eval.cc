// kvfold eval MODEL --text FILE [--window 256] [--max-windows N] [--compare ORIGINAL]
//              [--kv-cache SPEC] [--copy N] [--lckv-iterations M] [--json]
#include <cstdio>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>

#include "calib/text.h"
#include "calib/tokenizer.h"
#include "calib/windows.h"
#include "converter/convert.h"
#include "formats/atomic_file.h"
#include "formats/checkpoint.h"
#include "formats/error.h"
#include "formats/ranks.h"
#include "formats/sha256.h"
#include "formats/version.h"
#include "runtime_check/cache_policy_spec.h"
#include "runtime_check/evaluate.h"
#include "tools/commands.h"

namespace kvfold {
namespace {

struct EvalArgs {
  std::string model;
  std::string text;
  std::string compare;
  std::string kv_cache;
  std::string token_logp;  // --token-logp FILE
  int copy = 0;
  int lckv_iterations = 0;
  int window = 256;
  int max_windows = -1;
  int batch = 0;
  int threads = 0;
  std::uint64_t hidden_memory_bytes = kDefaultHiddenMemoryBytes;
  std::string device = "cpu";
  bool json = false;
  bool quiet = false;
};

void AddPerplexityFields(const PerplexityResult& r, nlohmann::ordered_json& j) {
  j["ppl"] = r.ppl;
  j["mean_nll"] = r.mean_nll;
  j["accuracy"] = r.accuracy;
  j["tokens_predicted"] = r.tokens_predicted;
  j["seconds"] = r.seconds;
  j["tokens_per_second"] = r.tokens_per_second;
}

// What every rank must have alike under mpirun (formats/ranks.h): hashed only with several ranks.
std::vector<RankInput> RankInputs(const EvalArgs& a, const Checkpoint& ck,
                                  const Checkpoint* compare, const CachePolicySpec& cache) {
  if (RankCount() == 1) return {};
  return {{"kvfold command", "eval", ""},
          {"checkpoint", SourceSha256(ck), a.model},
          {"--compare checkpoint", compare ? SourceSha256(*compare) : "", a.compare},
          {"evaluation text", Sha256OfFile(a.text), a.text},
          {"--window", std::to_string(a.window), ""},
          {"--max-windows", std::to_string(a.max_windows), ""},
          {"--kv-cache", cache.policy ? cache.text : "", ""},
          {"--copy", std::to_string(a.copy), ""},
          {"--lckv-iterations", std::to_string(a.lckv_iterations), ""},
          {"--batch", std::to_string(a.batch), ""}};
}

// --token-logp: every window's model input, its scored targets and their log p, for comparing
// another runtime token for token (tests/js/llama_cpp_logp.mjs).
void WriteTokenLogp(const std::string& path, const std::vector<TokenWindow>& windows,
                    std::int32_t bos, const std::vector<float>& logp) {
  const std::int64_t W = static_cast<std::int64_t>(windows.front().size());
  const ScoredPositions scored = ScoredPositionsOf(bos, 0, W);
  nlohmann::ordered_json out = {{"protocol", "kvfold-ppl-v1"},
                                {"window", W},
                                {"bos", bos},
                                {"scored_from", scored.begin},
                                {"windows", nlohmann::ordered_json::array()}};
  for (std::size_t w = 0; w < windows.size(); ++w) {
    std::vector<std::int32_t> input;
    AppendModelInput(windows[w], bos, input);
    std::vector<std::int32_t> targets;
    for (std::int64_t p = scored.begin; p < scored.end; ++p)
      targets.push_back(windows[w][std::min(PredictedToken(bos, p), W - 1)]);
    const auto first = logp.begin() + static_cast<std::ptrdiff_t>(w * targets.size());
    out["windows"].push_back({{"input", input},
                              {"targets", targets},
                              {"logp", std::vector<float>(first, first + targets.size())}});
  }
  WriteFileAtomically(path, out.dump() + "\n");
}

int RunEval(const EvalArgs& a) {
  const Checkpoint ck = OpenCheckpoint(a.model);
  if (ck.tokenizer_path.empty())
    Fail(a.model, "no tokenizer.json or tokenizer.model in the model folder");
  if (a.max_windows == 0) Fail("--max-windows", "must be positive");
  if (!a.token_logp.empty() && (!a.compare.empty() || !a.kv_cache.empty()))
    Fail("--token-logp", "records one model's log p: not with --compare or --kv-cache");
  if (a.lckv_iterations < 0) Fail("--lckv-iterations", "must be positive");
  const auto tokenizer = Tokenizer::Load(ck.tokenizer_path);
  if (tokenizer->vocab_size() > ck.config.vocab_size) {
    Fail(ck.tokenizer_path, "tokenizer has " + std::to_string(tokenizer->vocab_size()) +
                                " pieces but the model only " +
                                std::to_string(ck.config.vocab_size));
  }
  const std::vector<std::int32_t> tokens = tokenizer->Encode(LoadText(a.text));
  const std::vector<TokenWindow> windows = CutWindows(tokens, a.window, a.max_windows, a.text);

  RuntimeOptions runtime{a.device, a.threads};
  runtime.stream_layers =
      true;  // one layer in memory at a time (the checkpoints outlive the models)
  runtime.hidden_state_budget_bytes = a.hidden_memory_bytes;
  EvalOptions options{a.batch, !a.quiet};
  options.across_ranks = true;  // under mpirun each rank evaluates its share of the windows
  const auto model = ReferenceModel::Load(ck, runtime);
  const std::int32_t bos = tokenizer->bos_id();

  // A cache policy is measured against the full cache on the positions after the prefix.
  CachePolicySpec cache;
  if (!a.kv_cache.empty()) {
    cache = MakeCachePolicy(a.kv_cache, ck, a.window);
    options.cache = cache.policy.get();
    options.scored_from = cache.scored_from;
  }
  std::optional<Checkpoint> compare_ck;
  std::unique_ptr<ReferenceModel> original;
  if (!a.compare.empty()) {
    compare_ck = OpenCheckpoint(a.compare);
    original = ReferenceModel::Load(*compare_ck, runtime);
  }
  const bool comparing = original || cache.policy;
  const ReferenceModel& base = original ? *original : *model;
  RequireSameOnEveryRank(RankInputs(a, ck, compare_ck ? &*compare_ck : nullptr, cache));

  nlohmann::ordered_json j = {{"kvfold_version", kVersion},
                              {"protocol", "kvfold-ppl-v1"},
                              {"model", a.model},
                              {"text", a.text},
                              {"text_tokens", tokens.size()},
                              {"window", a.window},
                              {"windows", windows.size()},
                              {"device", model->device()},
                              {"ranks", RankCount()}};
  if (ck.config.SharesKv()) {
    j["kv_layers"] = {
        {"layer_types", LayerTypesText(ck.config.kv_layer_of)},
        {"computing_kv", ck.config.KvLayerCount()},
        {"kv_bytes_per_token", ck.config.KvBytesPerToken(ck.StoredElementBytes())},
        {"decoding", ck.config.AttendsAbove() ? "token by token (exact)" : "batched (exact)"}};
  }
  if (cache.policy) {
    j["kv_cache"] = {{"spec", cache.text},
                     {"scored_from", options.scored_from},
                     {"average_bits", cache.policy->AverageBits(a.window, options.scored_from,
                                                                ck.config.head_dim)}};
  }
  PerplexityResult result;
  ComparisonResult cmp;
  if (!comparing) {
    std::vector<float> logp;
    if (!a.token_logp.empty()) options.token_logp = &logp;
    result = EvaluatePerplexity(*model, windows, bos, options);
    AddPerplexityFields(result, j);
    if (!a.token_logp.empty()) WriteTokenLogp(a.token_logp, windows, bos, logp);
  } else {
    cmp = CompareModels(base, *model, windows, bos, options);
    result = cmp.other;
    AddPerplexityFields(result, j);
    nlohmann::ordered_json c = {{"model", original ? a.compare : a.model + " (full cache)"}};
    AddPerplexityFields(cmp.base, c);
    c["kl"] = cmp.kl;
    c["top1_agreement"] = cmp.top1_agreement;
    c["delta_nll"] = cmp.delta_nll;
    j["compare"] = c;
  }
  ComparisonResult copy;
  if (a.copy > 0) {
    EvalOptions copy_options = options;
    copy_options.scored_from = CopyTaskScoredFrom(a.window);
    copy = CompareModels(
        base, *model, CopyTaskWindows(a.copy, a.window, static_cast<int>(ck.config.vocab_size), 0),
        bos, copy_options);
    j["copy"] = {{"sequences", a.copy},
                 {"scored_from", copy_options.scored_from},
                 {"accuracy", copy.other.accuracy},
                 {"reference_accuracy", copy.base.accuracy}};
  }

  // LCKV: the paper's parallel prompt encoding against the exact sequential run.
  ComparisonResult parallel;
  if (a.lckv_iterations > 0) {
    if (!ck.config.AttendsAbove())
      Fail("--lckv-iterations", a.model + " has no layer reading a higher layer's K/V");
    RuntimeOptions iterative = runtime;
    iterative.lckv_iterations = a.lckv_iterations;
    parallel = CompareModels(*model, *ReferenceModel::Load(ck, iterative), windows, bos, options);
    j["lckv_parallel"] = {{"iterations", a.lckv_iterations},
                          {"ppl", parallel.other.ppl},
                          {"kl_from_sequential", parallel.kl},
                          {"top1_agreement", parallel.top1_agreement},
                          {"seconds", parallel.other.seconds}};
  }

  if (a.json) {
    std::printf("%s\n", j.dump(2).c_str());
    return 0;
  }
  const char* reference = original ? "original" : "full cache";
  std::printf("model        %s\n", a.model.c_str());
  std::printf("text         %s (%zu tokens; %zu windows of %d, %lld tokens predicted)\n",
              a.text.c_str(), tokens.size(), windows.size(), a.window,
              static_cast<long long>(result.tokens_predicted));
  if (cache.policy) {
    std::printf("kv cache     %s (positions %lld..%d scored)\n", cache.text.c_str(),
                static_cast<long long>(options.scored_from), a.window - 1);
    std::printf("kv bits      %.2f per element on average over those steps (full cache 16)\n",
                cache.policy->AverageBits(a.window, options.scored_from, ck.config.head_dim));
  }
  std::printf("ppl          %.4f  (mean NLL %.6f nats)\n", result.ppl, result.mean_nll);
  if (comparing) {
    std::printf("%-12s %.4f  (mean NLL %.6f nats)  %s\n", reference, cmp.base.ppl,
                cmp.base.mean_nll, original ? a.compare.c_str() : a.model.c_str());
    std::printf("KL           %.6f nats/token  (%s || model)\n", cmp.kl, reference);
    std::printf("top-1        %.2f%% agreement\n", 100.0 * cmp.top1_agreement);
    std::printf("delta NLL    %+.6f nats/token\n", cmp.delta_nll);
  }
  if (a.copy > 0) {
    std::printf(
        "copy         %.2f%% next-token accuracy on the repeat (%s: %.2f%%; %d sequences)\n",
        100.0 * copy.other.accuracy, reference, 100.0 * copy.base.accuracy, a.copy);
  }
  if (a.lckv_iterations > 0) {
    std::printf(
        "parallel     %.4f ppl with %d iterations: KL %.6f nats/token and %.2f%% top-1 against "
        "token by token\n",
        parallel.other.ppl, a.lckv_iterations, parallel.kl, 100.0 * parallel.top1_agreement);
  }
  std::printf("speed        %.0f tokens/s on %s\n", result.tokens_per_second,
              model->device().c_str());
  return 0;
}

}  // namespace

Command AddEvalCommand(CLI::App& app) {
  auto a = std::make_shared<EvalArgs>();
  CLI::App* sub = app.add_subcommand(
      "eval", "Perplexity by kvfold-ppl-v1; with --compare, KL/top-1/delta NLL vs the original");
  sub->add_option("MODEL", a->model, "HuggingFace model folder to evaluate")->required();
  sub->add_option("--text", a->text, "UTF-8 evaluation text")->required();
  sub->add_option("--window", a->window, "Tokens per window")
      ->capture_default_str()
      ->check(CLI::Range(2, 1 << 20));
  sub->add_option("--max-windows", a->max_windows, "Use only the first N windows")
      ->check(CLI::PositiveNumber);
  sub->add_option("--compare", a->compare, "Original model to compare against (same tokenizer)");
  sub->add_option(
      "--kv-cache", a->kv_cache,
      "Decode-time cache policy: 'evict<policy=l2-low,keep=0.5,skip=0,1>' (docs/eviction.md) "
      "or 'quant<scheme=kivi,bits=2>' (docs/kv-quant.md); compared with the full cache "
      "after the prefix");
  sub->add_option("--token-logp", a->token_logp,
                  "Also write each window's input ids, targets and log p(target) to this JSON "
                  "file (for comparing another runtime token for token; not with --compare)");
  sub->add_option("--copy", a->copy, "Also run the copy (retrieval) check on N random sequences")
      ->check(CLI::Range(0, 1 << 20));
  sub->add_option(
         "--lckv-iterations", a->lckv_iterations,
         "LCKV models: also run the paper's parallel encoding with M iterations and report how "
         "close it is to exact token-by-token decoding")
      ->check(CLI::Range(0, 1 << 20));
  sub->add_option("--device", a->device, "cpu, cuda or cuda:N")->capture_default_str();
  sub->add_option("--threads", a->threads, "CPU threads (0 = all cores)")->check(ThreadCount());
  AddHiddenMemoryOption(sub, &a->hidden_memory_bytes);
  AddRankTimeoutOption(sub);
  sub->add_option("--batch", a->batch, "Windows per forward batch (0 = ~2048 tokens)")
      ->check(CLI::Range(0, 1 << 16));
  sub->add_flag("--json", a->json, "Print JSON instead of text");
  sub->add_flag("--quiet", a->quiet, "No progress lines on stderr");
  return {sub, [a] { return RunEval(*a); }};
}

}  // namespace kvfold
