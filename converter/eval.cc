#include "converter/eval.h"

#include <memory>
#include <optional>

#include "calib/calibration_input.h"
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

namespace kvfold {
namespace {

void AddPerplexityFields(const PerplexityResult& r, nlohmann::ordered_json& j) {
  j["ppl"] = r.ppl;
  j["mean_nll"] = r.mean_nll;
  j["accuracy"] = r.accuracy;
  j["tokens_predicted"] = r.tokens_predicted;
  j["seconds"] = r.seconds;
  j["tokens_per_second"] = r.tokens_per_second;
}

// What every rank must have alike under mpirun (formats/ranks.h): hashed only with several ranks.
std::vector<RankInput> RankInputs(const EvalJob& a, const Checkpoint& ck, const Checkpoint* compare,
                                  const CachePolicySpec& cache) {
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

// The checks that need no model, and the model's tokenizer against its vocabulary.
void CheckJob(const EvalJob& a, const Checkpoint& ck) {
  if (ck.tokenizer_path.empty())
    Fail(a.model, "no tokenizer.json or tokenizer.model in the model folder");
  if (a.max_windows == 0) Fail("--max-windows", "must be positive");
  if (!a.token_logp.empty() && (!a.compare.empty() || !a.kv_cache.empty()))
    Fail("--token-logp", "records one model's log p: not with --compare or --kv-cache");
  if (a.lckv_iterations < 0) Fail("--lckv-iterations", "must be positive");
}

std::unique_ptr<Tokenizer> LoadTokenizer(const Checkpoint& ck) {
  auto tokenizer = Tokenizer::Load(ck.tokenizer_path);
  if (tokenizer->model_vocab_size() > ck.config.vocab_size) {
    Fail(ck.tokenizer_path, "tokenizer has " + std::to_string(tokenizer->model_vocab_size()) +
                                " pieces but the model only " +
                                std::to_string(ck.config.vocab_size));
  }
  return tokenizer;
}

// What the JSON says of the run before any number: the model, the text, the layout.
nlohmann::ordered_json Header(const EvalJob& a, const Checkpoint& ck, std::size_t tokens,
                              std::size_t windows, const std::string& device) {
  nlohmann::ordered_json j = {{"kvfold_version", kVersion}, {"protocol", "kvfold-ppl-v1"},
                              {"model", a.model},           {"text", a.text},
                              {"text_tokens", tokens},      {"window", a.window},
                              {"windows", windows},         {"device", device},
                              {"ranks", RankCount()}};
  if (ck.config.SharesKv()) {
    j["kv_layers"] = {
        {"layer_types", LayerTypesText(ck.config.kv_layer_of)},
        {"computing_kv", ck.config.KvLayerCount()},
        {"kv_bytes_per_token", ck.config.KvBytesPerToken(ck.StoredElementBytes())},
        {"decoding", ck.config.AttendsAbove() ? "token by token (exact)" : "batched (exact)"}};
  }
  return j;
}

// The models of one evaluation: the one evaluated, and what it is measured against (the
// --compare model, or itself with the full cache when a cache policy is given).
struct EvalModels {
  std::unique_ptr<ReferenceModel> model, original;
  std::optional<Checkpoint> compare_ck;
  CachePolicySpec cache;
  bool Comparing() const { return original || cache.policy; }
  const ReferenceModel& Base() const { return original ? *original : *model; }
};

EvalModels LoadModels(const EvalJob& a, const Checkpoint& ck, const RuntimeOptions& runtime,
                      EvalOptions& options) {
  EvalModels m;
  m.model = ReferenceModel::Load(ck, runtime);
  // A cache policy is measured against the full cache on the positions after the prefix.
  if (!a.kv_cache.empty()) {
    m.cache = MakeCachePolicy(a.kv_cache, ck, a.window);
    options.cache = m.cache.policy.get();
    options.scored_from = m.cache.scored_from;
  }
  if (!a.compare.empty()) {
    m.compare_ck = OpenCheckpoint(a.compare);
    m.original = ReferenceModel::Load(*m.compare_ck, runtime);
  }
  return m;
}

// Perplexity, and with a reference the comparison with it ("compare").
void Measure(const EvalJob& a, const EvalModels& m, const std::vector<TokenWindow>& windows,
             std::int32_t bos, EvalOptions options, nlohmann::ordered_json& j) {
  if (!m.Comparing()) {
    std::vector<float> logp;
    if (!a.token_logp.empty()) options.token_logp = &logp;
    AddPerplexityFields(EvaluatePerplexity(*m.model, windows, bos, options), j);
    if (!a.token_logp.empty()) WriteTokenLogp(a.token_logp, windows, bos, logp);
    return;
  }
  const ComparisonResult cmp = CompareModels(m.Base(), *m.model, windows, bos, options);
  AddPerplexityFields(cmp.other, j);
  nlohmann::ordered_json c = {{"model", m.original ? a.compare : a.model + " (full cache)"},
                              {"reference", m.original ? "original" : "full cache"}};
  AddPerplexityFields(cmp.base, c);
  c["kl"] = cmp.kl;
  c["top1_agreement"] = cmp.top1_agreement;
  c["delta_nll"] = cmp.delta_nll;
  j["compare"] = c;
}

// --copy: next-token accuracy on the repeated half of random sequences, model and reference.
nlohmann::ordered_json CopyCheck(const EvalJob& a, const EvalModels& m, std::int64_t vocab,
                                 std::int32_t bos, EvalOptions options) {
  options.scored_from = CopyTaskScoredFrom(a.window);
  const ComparisonResult copy =
      CompareModels(m.Base(), *m.model,
                    CopyTaskWindows(a.copy, a.window, static_cast<int>(vocab), 0), bos, options);
  return {{"sequences", a.copy},
          {"scored_from", options.scored_from},
          {"accuracy", copy.other.accuracy},
          {"reference_accuracy", copy.base.accuracy}};
}

// LCKV: the paper's parallel prompt encoding against the exact sequential run.
nlohmann::ordered_json LckvParallel(const EvalJob& a, const Checkpoint& ck,
                                    const ReferenceModel& model, RuntimeOptions runtime,
                                    const std::vector<TokenWindow>& windows, std::int32_t bos,
                                    const EvalOptions& options) {
  if (!ck.config.AttendsAbove())
    Fail("--lckv-iterations", a.model + " has no layer reading a higher layer's K/V");
  runtime.lckv_iterations = a.lckv_iterations;
  const ComparisonResult parallel =
      CompareModels(model, *ReferenceModel::Load(ck, runtime), windows, bos, options);
  return {{"iterations", a.lckv_iterations},
          {"ppl", parallel.other.ppl},
          {"kl_from_sequential", parallel.kl},
          {"top1_agreement", parallel.top1_agreement},
          {"seconds", parallel.other.seconds}};
}

}  // namespace

nlohmann::ordered_json RunEval(const EvalJob& a) {
  const Checkpoint ck = OpenCheckpoint(a.model);
  CheckJob(a, ck);
  const auto tokenizer = LoadTokenizer(ck);
  // Every id checked against the model's rows, naming the text (a special token written in it
  // may lie beyond them: Gemma 3's image token).
  const std::vector<std::int32_t> tokens = EncodeTextFile(a.text, *tokenizer, ck.config.vocab_size,
                                                          0, ThreadsPerRank(a.compute.threads));
  const std::vector<TokenWindow> windows = CutWindows(tokens, a.window, a.max_windows, a.text);
  const std::int32_t bos = tokenizer->bos_id();
  const RuntimeOptions runtime = StreamedRuntime(a.compute);  // the checkpoints outlive the models
  EvalOptions options{a.batch, a.compute.progress};
  options.vocab_block_rows = a.vocab_block;
  options.across_ranks = true;  // under mpirun each rank evaluates its share of the windows
  const EvalModels m = LoadModels(a, ck, runtime, options);
  RequireSameOnEveryRank(RankInputs(a, ck, m.compare_ck ? &*m.compare_ck : nullptr, m.cache));

  nlohmann::ordered_json j = Header(a, ck, tokens.size(), windows.size(), m.model->device());
  if (m.cache.policy) {
    j["kv_cache"] = {{"spec", m.cache.text},
                     {"scored_from", options.scored_from},
                     {"average_bits", m.cache.policy->AverageBits(a.window, options.scored_from,
                                                                  ck.config.head_dim)}};
  }
  Measure(a, m, windows, bos, options, j);
  if (a.copy > 0) j["copy"] = CopyCheck(a, m, ck.config.vocab_size, bos, options);
  if (a.lckv_iterations > 0)
    j["lckv_parallel"] = LckvParallel(a, ck, *m.model, runtime, windows, bos, options);
  return j;
}

}  // namespace kvfold
