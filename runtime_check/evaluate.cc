#include "runtime_check/evaluate.h"

#include <c10/core/InferenceMode.h>

#include <algorithm>
#include <cmath>
#include <cstdio>

#include "formats/error.h"
#include "formats/progress.h"
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
  at::Tensor inputs = at::empty({static_cast<std::int64_t>(count), W}, at::kLong);
  at::Tensor targets = at::empty({static_cast<std::int64_t>(count), W}, at::kLong);
  std::int64_t* in = inputs.data_ptr<std::int64_t>();
  std::int64_t* tg = targets.data_ptr<std::int64_t>();
  for (std::size_t b = 0; b < count; ++b) {
    const TokenWindow& w = windows[first + b];
    for (std::int64_t i = 0; i < W; ++i) {
      if (w[i] < 0 || w[i] >= vocab) {
        Fail("eval", "token id " + std::to_string(w[i]) + " is outside the model's vocabulary of " +
                         std::to_string(vocab) + " (tokenizer and model do not match?)");
      }
      in[b * W + i] = i == 0 ? bos : w[i - 1];
      tg[b * W + i] = w[i];
    }
  }
  return {inputs.to(device), targets.to(device)};
}

std::size_t WindowsPerBatch(const EvalOptions& options, std::size_t window) {
  if (options.batch_windows > 0) return static_cast<std::size_t>(options.batch_windows);
  return std::max<std::size_t>(1, 4096 / window);
}

void CheckWindows(const std::vector<TokenWindow>& windows) {
  if (windows.empty()) Fail("eval", "no windows to evaluate");
  for (const auto& w : windows) {
    if (w.size() != windows.front().size()) Fail("eval", "windows differ in length");
  }
}

PerplexityResult Finish(int windows, std::int64_t tokens, double nll_sum, double seconds) {
  PerplexityResult r;
  r.windows = windows;
  r.tokens_predicted = tokens;
  r.mean_nll = nll_sum / static_cast<double>(tokens);
  r.ppl = std::exp(r.mean_nll);
  r.seconds = seconds;
  r.tokens_per_second = static_cast<double>(tokens) / seconds;
  return r;
}

// Sum over positions of -log p(target), in double.
double NllSum(const at::Tensor& log_probs, const at::Tensor& targets) {
  return -log_probs.gather(-1, targets.unsqueeze(-1)).to(at::kDouble).sum().item<double>();
}

std::string Rate(std::int64_t tokens, double seconds) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.0f tok/s", static_cast<double>(tokens) / std::max(seconds, 1e-9));
  return buf;
}

}  // namespace

PerplexityResult EvaluatePerplexity(const ReferenceModel& model,
                                    const std::vector<TokenWindow>& windows, std::int32_t bos,
                                    const EvalOptions& options) {
  CheckWindows(windows);
  c10::InferenceMode inference;
  const auto& impl = model.impl();
  const std::size_t per_batch = WindowsPerBatch(options, windows.front().size());
  Progress progress("eval", static_cast<std::int64_t>(windows.size()), "windows", options.progress);
  double nll = 0;
  std::int64_t tokens = 0;
  for (std::size_t first = 0; first < windows.size(); first += per_batch) {
    const std::size_t count = std::min(per_batch, windows.size() - first);
    Batch batch = MakeBatch(windows, first, count, bos, impl.config.vocab_size, impl.device);
    at::Tensor log_probs = at::log_softmax(impl.Forward(batch.inputs, nullptr), -1);
    nll += NllSum(log_probs, batch.targets);
    tokens += batch.targets.numel();
    progress.Update(static_cast<std::int64_t>(first + count), Rate(tokens, progress.ElapsedSeconds()));
  }
  return Finish(static_cast<int>(windows.size()), tokens, nll, progress.ElapsedSeconds());
}

ComparisonResult CompareModels(const ReferenceModel& base, const ReferenceModel& other,
                               const std::vector<TokenWindow>& windows, std::int32_t bos,
                               const EvalOptions& options) {
  CheckWindows(windows);
  const auto& a = base.impl();
  const auto& b = other.impl();
  if (a.config.vocab_size != b.config.vocab_size) {
    Fail("--compare", "models have different vocabularies (" + std::to_string(a.config.vocab_size) +
                          " vs " + std::to_string(b.config.vocab_size) + ")");
  }
  if (a.device != b.device) Fail("--compare", "models are on different devices");
  c10::InferenceMode inference;
  const std::size_t per_batch = WindowsPerBatch(options, windows.front().size());
  Progress progress("compare", static_cast<std::int64_t>(windows.size()), "windows",
                    options.progress);
  double nll_a = 0, nll_b = 0, kl = 0, agree = 0;
  double seconds_a = 0, seconds_b = 0;
  std::int64_t tokens = 0;
  for (std::size_t first = 0; first < windows.size(); first += per_batch) {
    const std::size_t count = std::min(per_batch, windows.size() - first);
    Batch batch = MakeBatch(windows, first, count, bos, a.config.vocab_size, a.device);
    const double t0 = progress.ElapsedSeconds();
    at::Tensor lp_a = at::log_softmax(a.Forward(batch.inputs, nullptr), -1);
    nll_a += NllSum(lp_a, batch.targets);
    const double t1 = progress.ElapsedSeconds();
    at::Tensor lp_b = at::log_softmax(b.Forward(batch.inputs, nullptr), -1);
    nll_b += NllSum(lp_b, batch.targets);
    const double t2 = progress.ElapsedSeconds();
    seconds_a += t1 - t0;
    seconds_b += t2 - t1;
    kl += (lp_a.exp() * (lp_a - lp_b)).sum(-1).to(at::kDouble).sum().item<double>();
    agree += lp_a.argmax(-1).eq(lp_b.argmax(-1)).sum().item<double>();
    tokens += batch.targets.numel();
    progress.Update(static_cast<std::int64_t>(first + count));
  }
  ComparisonResult r;
  const int n = static_cast<int>(windows.size());
  r.base = Finish(n, tokens, nll_a, seconds_a);
  r.other = Finish(n, tokens, nll_b, seconds_b);
  r.kl = kl / static_cast<double>(tokens);
  r.top1_agreement = agree / static_cast<double>(tokens);
  r.delta_nll = r.other.mean_nll - r.base.mean_nll;
  return r;
}

}  // namespace kvfold
