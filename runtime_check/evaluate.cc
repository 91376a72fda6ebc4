#include "runtime_check/evaluate.h"

#include <c10/core/InferenceMode.h>

#include <algorithm>
#include <cmath>
#include <cstdio>

#include "formats/error.h"
#include "formats/progress.h"
#include "runtime_check/data_parallel.h"
#include "runtime_check/llama_forward.h"

namespace kvfold {
namespace {

struct Batch {
  at::Tensor inputs;   // [b, W] int64: bos + window minus its last token
  at::Tensor targets;  // [b, W] int64: the window
};

Batch MakeBatch(const std::vector<TokenWindow>& windows, std::size_t first, std::size_t count,
                std::int32_t bos, std::int64_t vocab, const at::Device& device) {
  const std::int64_t W = static_cast<std::int64_t>(windows[first].size());
  std::vector<std::int32_t> inputs;
  inputs.reserve(count * static_cast<std::size_t>(W));
  for (std::size_t b = 0; b < count; ++b) AppendModelInput(windows[first + b], bos, inputs);
  at::Tensor in = at::empty({static_cast<std::int64_t>(count), W}, at::kLong);
  at::Tensor targets = at::empty({static_cast<std::int64_t>(count), W}, at::kLong);
  std::int64_t* pi = in.data_ptr<std::int64_t>();
  std::int64_t* pt = targets.data_ptr<std::int64_t>();
  for (std::size_t b = 0; b < count; ++b) {
    const TokenWindow& w = windows[first + b];
    for (std::int64_t i = 0; i < W; ++i) {
      if (w[i] < 0 || w[i] >= vocab) {
        Fail("eval", "token id " + std::to_string(w[i]) + " is outside the model's vocabulary of " +
                         std::to_string(vocab) + " (tokenizer and model do not match?)");
      }
      pi[b * W + i] = inputs[b * W + i];
      pt[b * W + i] = w[i];
    }
  }
  return {in.to(device), targets.to(device)};
}

std::size_t WindowsPerBatch(const EvalOptions& options, std::size_t window) {
  if (options.batch_windows > 0) return static_cast<std::size_t>(options.batch_windows);
  return std::max<std::size_t>(1, 2048 / window);  // measured best on mini-mha (docs/results.md)
}

void CheckWindows(const std::vector<TokenWindow>& windows, const EvalOptions& options) {
  if (windows.empty()) Fail("eval", "no windows to evaluate");
  for (const auto& w : windows) {
    if (w.size() != windows.front().size()) Fail("eval", "windows differ in length");
  }
  if (options.scored_from < 0 || options.scored_from >= static_cast<std::int64_t>(windows.front().size())) {
    Fail("eval", "scored positions start at " + std::to_string(options.scored_from) + ", outside the window of " +
                     std::to_string(windows.front().size()));
  }
}

PerplexityResult Finish(int windows, std::int64_t tokens, double nll_sum, double correct, double seconds) {
  PerplexityResult r;
  r.windows = windows;
  r.tokens_predicted = tokens;
  r.mean_nll = nll_sum / static_cast<double>(tokens);
  r.ppl = std::exp(r.mean_nll);
  r.accuracy = correct / static_cast<double>(tokens);
  r.seconds = seconds;
  r.tokens_per_second = static_cast<double>(tokens) / seconds;
  return r;
}

// Sum over positions of -log p(target), in double.
double NllSum(const at::Tensor& log_probs, const at::Tensor& targets) {
  return -log_probs.gather(-1, targets.unsqueeze(-1)).to(at::kDouble).sum().item<double>();
}

// Number of positions whose argmax is the target.
double Correct(const at::Tensor& log_probs, const at::Tensor& targets) {
  return log_probs.argmax(-1).eq(targets).sum().item<double>();
}

// Log-probabilities of the scored positions only: [b, W - scored_from, V].
at::Tensor ScoredLogProbs(const at::Tensor& logits, std::int64_t scored_from) {
  return at::log_softmax(logits.narrow(1, scored_from, logits.size(1) - scored_from), -1);
}

std::string Rate(std::int64_t tokens, double seconds) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.0f tok/s", static_cast<double>(tokens) / std::max(seconds, 1e-9));
  return buf;
}

// Partial sums of one group of windows; groups are combined in order, so results do not depend
// on which thread evaluated what.
struct GroupSums {
  double nll_a = 0, nll_b = 0, kl = 0, agree = 0, correct_a = 0, correct_b = 0;
  std::int64_t tokens = 0;
};

// Evaluates `windows` in groups of `per_group`, data-parallel (runtime_check/data_parallel.h).
// `fn(batch, first_window)` returns the group's sums; `after_round(done_windows)` reports progress.
template <typename Fn, typename AfterRound>
std::vector<GroupSums> ForEachGroup(const ReferenceModel& model,
                                    const std::vector<TokenWindow>& windows, std::size_t per_group,
                                    std::int32_t bos, Fn fn, AfterRound after_round) {
  const auto& impl = model.impl();
  const std::size_t groups = (windows.size() + per_group - 1) / per_group;
  std::vector<GroupSums> sums(groups);
  RunDataParallel(
      model, groups,
      [&](std::size_t g, std::size_t) {
        const std::size_t first = g * per_group;
        const std::size_t count = std::min(per_group, windows.size() - first);
        sums[g] = fn(MakeBatch(windows, first, count, bos, impl.config.vocab_size, impl.device),
                     static_cast<std::int64_t>(first));
      },
      [&](std::size_t done) { after_round(std::min(windows.size(), done * per_group)); });
  return sums;
}

GroupSums Total(const std::vector<GroupSums>& parts) {
  GroupSums t;
  for (const auto& p : parts) {
    t.nll_a += p.nll_a;
    t.nll_b += p.nll_b;
    t.kl += p.kl;
    t.agree += p.agree;
    t.correct_a += p.correct_a;
    t.correct_b += p.correct_b;
    t.tokens += p.tokens;
  }
  return t;
}

}  // namespace

PerplexityResult EvaluatePerplexity(const ReferenceModel& model,
                                    const std::vector<TokenWindow>& windows, std::int32_t bos,
                                    const EvalOptions& options) {
  CheckWindows(windows, options);
  c10::InferenceMode inference;
  const auto& impl = model.impl();
  const std::int64_t from = options.scored_from;
  Progress progress("eval", static_cast<std::int64_t>(windows.size()), "windows", options.progress);
  std::int64_t done_tokens = 0;
  const GroupSums t = Total(ForEachGroup(
      model, windows, WindowsPerBatch(options, windows.front().size()), bos,
      [&](const Batch& batch, std::int64_t first_window) {
        GroupSums s;
        const at::Tensor lp = ScoredLogProbs(impl.Forward(batch.inputs, nullptr, options.cache, first_window), from);
        const at::Tensor targets = batch.targets.narrow(1, from, batch.targets.size(1) - from);
        s.nll_a = NllSum(lp, targets);
        s.correct_a = Correct(lp, targets);
        s.tokens = targets.numel();
        return s;
      },
      [&](std::size_t done) {
        done_tokens = static_cast<std::int64_t>(done * windows.front().size());
        progress.Update(static_cast<std::int64_t>(done), Rate(done_tokens, progress.ElapsedSeconds()));
      }));
  return Finish(static_cast<int>(windows.size()), t.tokens, t.nll_a, t.correct_a, progress.ElapsedSeconds());
}

ComparisonResult CompareModels(const ReferenceModel& base, const ReferenceModel& other,
                               const std::vector<TokenWindow>& windows, std::int32_t bos,
                               const EvalOptions& options) {
  CheckWindows(windows, options);
  const auto& a = base.impl();
  const auto& b = other.impl();
  if (a.config.vocab_size != b.config.vocab_size) {
    Fail("--compare", "models have different vocabularies (" + std::to_string(a.config.vocab_size) +
                          " vs " + std::to_string(b.config.vocab_size) + ")");
  }
  if (a.device != b.device) Fail("--compare", "models are on different devices");
  c10::InferenceMode inference;
  Progress progress("compare", static_cast<std::int64_t>(windows.size()), "windows",
                    options.progress);
  const GroupSums t = Total(ForEachGroup(
      base, windows, WindowsPerBatch(options, windows.front().size()), bos,
      [&](const Batch& batch, std::int64_t first_window) {
        GroupSums s;
        const std::int64_t from = options.scored_from;
        const at::Tensor lp_a = ScoredLogProbs(a.Forward(batch.inputs, nullptr), from);
        const at::Tensor lp_b = ScoredLogProbs(b.Forward(batch.inputs, nullptr, options.cache, first_window), from);
        const at::Tensor targets = batch.targets.narrow(1, from, batch.targets.size(1) - from);
        s.nll_a = NllSum(lp_a, targets);
        s.nll_b = NllSum(lp_b, targets);
        s.correct_a = Correct(lp_a, targets);
        s.correct_b = Correct(lp_b, targets);
        s.kl = (lp_a.exp() * (lp_a - lp_b)).sum(-1).to(at::kDouble).sum().item<double>();
        s.agree = lp_a.argmax(-1).eq(lp_b.argmax(-1)).sum().item<double>();
        s.tokens = targets.numel();
        return s;
      },
      [&](std::size_t done) { progress.Update(static_cast<std::int64_t>(done)); }));
  // Both models run in every group; each gets half of the wall time.
  const double seconds = progress.ElapsedSeconds() / 2;
  ComparisonResult r;
  const int n = static_cast<int>(windows.size());
  r.base = Finish(n, t.tokens, t.nll_a, t.correct_a, seconds);
  r.other = Finish(n, t.tokens, t.nll_b, t.correct_b, seconds);
  // KL is >= 0; a sum of float32 terms can land a hair below zero when the models agree.
  r.kl = std::max(0.0, t.kl / static_cast<double>(t.tokens));
  r.top1_agreement = t.agree / static_cast<double>(t.tokens);
  r.delta_nll = r.other.mean_nll - r.base.mean_nll;
  return r;
}

}  // namespace kvfold
