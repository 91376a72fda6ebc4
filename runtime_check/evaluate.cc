#include "runtime_check/evaluate.h"

#include <c10/core/InferenceMode.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <functional>

#include "formats/error.h"
#include "formats/progress.h"
#include "formats/ranks.h"
#include "runtime_check/data_parallel.h"
#include "runtime_check/llama_forward.h"
#include "runtime_check/vocab_blocks.h"

namespace kvfold {
namespace {

struct Batch {
  at::Tensor inputs;   // [b, W] int64: the model input (AppendModelInput)
  at::Tensor targets;  // [b, W] int64: what each position predicts (PredictedToken)
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
      // Without BOS the last position predicts nothing in the window; it is never scored.
      pt[b * W + i] = w[std::min(PredictedToken(bos, i), W - 1)];
    }
  }
  return {in.to(device), targets.to(device)};
}

std::size_t WindowsPerGroup(const EvalOptions& options, const std::vector<TokenWindow>& windows,
                            const ReferenceModel::Impl& model) {
  if (options.batch_windows > 0) return static_cast<std::size_t>(options.batch_windows);
  return WindowsPerBatch(windows.size(), windows.front().size(), model.device.is_cpu());
}

void CheckWindows(const std::vector<TokenWindow>& windows, const EvalOptions& options) {
  if (windows.empty()) Fail("eval", "no windows to evaluate");
  for (const auto& w : windows) {
    if (w.size() != windows.front().size()) Fail("eval", "windows differ in length");
  }
  if (options.scored_from < 0 ||
      options.scored_from >= static_cast<std::int64_t>(windows.front().size())) {
    Fail("eval", "scored positions start at " + std::to_string(options.scored_from) +
                     ", outside the window of " + std::to_string(windows.front().size()));
  }
}

PerplexityResult Finish(int windows, std::int64_t tokens, double nll_sum, double correct,
                        double seconds) {
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
double NllSum(const RowScores& s) {
  return -s.TargetLogProb().to(at::kDouble).sum().item<double>();
}

// Number of positions whose argmax is the target.
double Correct(const RowScores& s, const at::Tensor& targets) {
  return s.argmax.eq(targets).sum().item<double>();
}

std::string Rate(std::int64_t tokens, double seconds) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.0f tok/s",
                static_cast<double>(tokens) / std::max(seconds, 1e-9));
  return buf;
}

// Partial sums of one group of windows; groups are combined in order, so results do not depend
// on which thread evaluated what.
struct GroupSums {
  double nll_a = 0, nll_b = 0, kl = 0, agree = 0, correct_a = 0, correct_b = 0;
  std::int64_t tokens = 0;
  void Add(const GroupSums& p) {
    nll_a += p.nll_a;
    nll_b += p.nll_b;
    kl += p.kl;
    agree += p.agree;
    correct_a += p.correct_a;
    correct_b += p.correct_b;
    tokens += p.tokens;
  }
};

// Every group's sums, each from the rank that evaluated it, then added in group order: the same
// numbers, bit for bit, for any rank count (formats/ranks.h, SumOwnedItems).
GroupSums Total(std::vector<GroupSums> sums, bool across_ranks) {
  if (across_ranks && RankCount() > 1) {
    constexpr std::size_t kFields = 7;
    std::vector<double> flat;
    flat.reserve(sums.size() * kFields);
    for (const auto& s : sums) {
      const double tokens = static_cast<double>(s.tokens);
      flat.insert(flat.end(), {s.nll_a, s.nll_b, s.kl, s.agree, s.correct_a, s.correct_b, tokens});
    }
    SumOwnedItems(flat);
    for (std::size_t g = 0; g < sums.size(); ++g) {
      const double* f = flat.data() + g * kFields;
      sums[g] = {f[0], f[1], f[2], f[3], f[4], f[5], static_cast<std::int64_t>(f[6])};
    }
  }
  GroupSums t;
  for (const auto& s : sums) t.Add(s);
  return t;
}

// The windows cut into groups of `per_group` (the last may be shorter), as batches: every group,
// or with `across_ranks` this rank's share of them (formats/ranks.h).
struct Groups {
  std::vector<Batch> batches;
  std::vector<std::size_t> index;  // of batches[k] among all groups
  std::size_t total = 0;           // groups over all ranks
};

Groups MakeGroups(const std::vector<TokenWindow>& windows, std::size_t per_group, std::int32_t bos,
                  const ReferenceModel::Impl& model, bool across_ranks) {
  Groups groups;
  for (std::size_t first = 0; first < windows.size(); first += per_group, ++groups.total) {
    if (across_ranks && !OwnsItem(groups.total)) continue;
    const std::size_t count = std::min(per_group, windows.size() - first);
    groups.batches.push_back(
        MakeBatch(windows, first, count, bos, model.config.vocab_size, model.device));
    groups.index.push_back(groups.total);
  }
  return groups;
}

// The final residual streams of every group: one sweep, each layer fetched once.
HiddenStateStore SweepGroups(const ReferenceModel::Impl& model, const Groups& groups,
                             std::size_t per_group, const KvCachePolicy* cache,
                             const std::function<void(std::int64_t)>& after_layer) {
  std::vector<at::Tensor> inputs;
  SweepOptions options;
  options.cache = cache;
  options.after_layer = after_layer;
  for (std::size_t k = 0; k < groups.batches.size(); ++k) {
    inputs.push_back(groups.batches[k].inputs);
    options.first_sequences.push_back(static_cast<std::int64_t>(groups.index[k] * per_group));
  }
  if (model.config.SharesKv() && cache != nullptr) {
    Fail("--kv-cache",
         "decode-time cache policies on a model whose layers share K/V are not supported");
  }
  if (!model.DecodesTokenByToken()) return model.SweepHiddenStates(inputs, options);
  HiddenStateStore logits(UINT64_MAX);  // token by token: the logits themselves (see ScoredRows)
  if (cache != nullptr)
    Fail("runtime", "token-by-token decoding takes no observer or cache policy");
  for (const auto& in : inputs) logits.Add(DecodeTokenByToken(model, in));
  return logits;
}

// A model's scored positions of one group as logits formed a vocabulary block at a time: the
// final residual streams of the rows that are scored, normalised, against the LM head (or,
// decoded token by token, the logits [R, V] themselves).
std::unique_ptr<LogitSource> ScoredLogits(const ReferenceModel::Impl& model,
                                          const at::Tensor& swept, std::int64_t windows,
                                          std::int64_t W, const ScoredPositions& scored) {
  const std::int64_t width = swept.size(-1);
  at::Tensor rows = swept.reshape({windows, W, width})
                        .narrow(1, scored.begin, scored.count())
                        .reshape({-1, width});
  if (model.DecodesTokenByToken()) return std::make_unique<GivenLogits>(std::move(rows));
  return std::make_unique<HeadLogits>(
      RmsNorm(rows, model.final_norm, model.config.rms_norm_eps), model.config.vocab_size,
      [&model](std::int64_t begin, std::int64_t count) { return model.LmHeadRows(begin, count); },
      model.config.final_logit_softcap);
}

VocabBlocking BlockingOf(const EvalOptions& options) {
  return {options.vocab_block_rows, options.logit_chunk_rows};
}

}  // namespace

PerplexityResult EvaluatePerplexity(const ReferenceModel& model,
                                    const std::vector<TokenWindow>& windows, std::int32_t bos,
                                    const EvalOptions& options) {
  CheckWindows(windows, options);
  c10::InferenceMode inference;
  const auto& impl = model.impl();
  const std::int64_t W = static_cast<std::int64_t>(windows.front().size());
  const ScoredPositions scored = ScoredPositionsOf(bos, options.scored_from, W);
  const std::int64_t L = impl.config.num_hidden_layers;
  const std::size_t per_group = WindowsPerGroup(options, windows, impl);
  Progress progress("eval", L + 1, "layers", options.progress);
  const Groups groups = MakeGroups(windows, per_group, bos, impl, options.across_ranks);
  if (options.token_logp != nullptr) {
    if (options.across_ranks && RankCount() > 1) Fail("eval", "per-token log p on one rank only");
    options.token_logp->assign(windows.size() * static_cast<std::size_t>(scored.count()), 0.0f);
  }
  const HiddenStateStore hidden = SweepGroups(impl, groups, per_group, options.cache,
                                              [&](std::int64_t done) { progress.Update(done); });
  std::vector<GroupSums> sums(groups.total);
  RunDataParallel(
      model, groups.batches.size(),
      [&](std::size_t k, std::size_t) {
        const Batch& group = groups.batches[k];
        const std::size_t g = groups.index[k];
        const auto rows =
            ScoredLogits(impl, hidden.Get(k, impl.device), group.inputs.size(0), W, scored);
        const at::Tensor targets =
            group.targets.narrow(1, scored.begin, scored.count()).reshape({-1});
        const RowScores s = ScoreRows(*rows, targets, BlockingOf(options));
        sums[g].nll_a += NllSum(s);
        sums[g].correct_a += Correct(s, targets);
        if (options.token_logp != nullptr) {
          const at::Tensor picked = s.TargetLogProb().to(at::kFloat).cpu().contiguous();
          std::copy_n(picked.data_ptr<float>(), picked.numel(),
                      options.token_logp->begin() + g * per_group * scored.count());
        }
        sums[g].tokens = targets.size(0);
      },
      [](std::size_t) {});
  const GroupSums t = Total(std::move(sums), options.across_ranks);
  progress.Update(L + 1, Rate(t.tokens, progress.ElapsedSeconds()));
  return Finish(static_cast<int>(windows.size()), t.tokens, t.nll_a, t.correct_a,
                progress.ElapsedSeconds());
}

struct ReferenceSweep::State {
  const ReferenceModel* base = nullptr;
  std::vector<TokenWindow> windows;
  std::int32_t bos = 0;
  std::int64_t scored_from = 0;
  bool across_ranks = false;
  int batch_windows = 0;  // as asked (EvalOptions); per_group is what it gave
  std::size_t per_group = 0;
  ScoredPositions scored;
  Groups groups;
  HiddenStateStore hidden{UINT64_MAX};
  double seconds = 0;  // of the sweep
};

ReferenceSweep::ReferenceSweep(std::unique_ptr<State> state) : state_(std::move(state)) {}
ReferenceSweep::ReferenceSweep(ReferenceSweep&&) noexcept = default;
ReferenceSweep& ReferenceSweep::operator=(ReferenceSweep&&) noexcept = default;
ReferenceSweep::~ReferenceSweep() = default;

namespace {

void CheckComparable(const ReferenceModel& base, const ReferenceModel& other) {
  const auto& a = base.impl();
  const auto& b = other.impl();
  if (a.config.vocab_size != b.config.vocab_size) {
    Fail("--compare", "models have different vocabularies (" + std::to_string(a.config.vocab_size) +
                          " vs " + std::to_string(b.config.vocab_size) + ")");
  }
  if (a.device != b.device) Fail("--compare", "models are on different devices");
}

// The reference's final residual streams over `windows`, its groups as CompareModels cuts them.
std::unique_ptr<ReferenceSweep::State> SweepBase(const ReferenceModel& base,
                                                 const std::vector<TokenWindow>& windows,
                                                 std::int32_t bos, const EvalOptions& options,
                                                 Progress& progress) {
  CheckWindows(windows, options);
  c10::InferenceMode inference;
  auto s = std::make_unique<ReferenceSweep::State>();
  s->base = &base;
  s->windows = windows;
  s->bos = bos;
  s->scored_from = options.scored_from;
  s->across_ranks = options.across_ranks;
  const std::int64_t W = static_cast<std::int64_t>(windows.front().size());
  s->scored = ScoredPositionsOf(bos, options.scored_from, W);
  s->batch_windows = options.batch_windows;
  s->per_group = WindowsPerGroup(options, windows, base.impl());
  s->groups = MakeGroups(windows, s->per_group, bos, base.impl(), options.across_ranks);
  const double t0 = progress.ElapsedSeconds();
  s->hidden = SweepGroups(base.impl(), s->groups, s->per_group, nullptr,
                          [&](std::int64_t done) { progress.Update(done); });
  s->seconds = progress.ElapsedSeconds() - t0;
  return s;
}

// `other` over the sweep's windows, scored against the reference's rows; progress counts on
// from `offset` layers. Each model gets half of the elapsed time.
ComparisonResult Score(const ReferenceSweep::State& s, const ReferenceModel& other,
                       const EvalOptions& options, Progress& progress, std::int64_t offset) {
  const auto& a = s.base->impl();
  const auto& b = other.impl();
  c10::InferenceMode inference;
  const std::int64_t W = static_cast<std::int64_t>(s.windows.front().size());
  const std::int64_t Lb = b.config.num_hidden_layers;
  const HiddenStateStore hidden_b =
      SweepGroups(b, s.groups, s.per_group, options.cache,
                  [&](std::int64_t done) { progress.Update(offset + done); });
  std::vector<GroupSums> sums(s.groups.total);
  RunDataParallel(
      *s.base, s.groups.batches.size(),
      [&](std::size_t k, std::size_t) {
        const Batch& group = s.groups.batches[k];
        const std::int64_t windows_in_group = group.inputs.size(0);
        const auto rows_a =
            ScoredLogits(a, s.hidden.Get(k, a.device), windows_in_group, W, s.scored);
        const auto rows_b =
            ScoredLogits(b, hidden_b.Get(k, b.device), windows_in_group, W, s.scored);
        const at::Tensor targets =
            group.targets.narrow(1, s.scored.begin, s.scored.count()).reshape({-1});
        const PairScores p = CompareRows(*rows_a, *rows_b, targets, BlockingOf(options));
        GroupSums& g = sums[s.groups.index[k]];
        g.nll_a += NllSum(p.a);
        g.nll_b += NllSum(p.b);
        g.correct_a += Correct(p.a, targets);
        g.correct_b += Correct(p.b, targets);
        g.kl += p.kl.to(at::kDouble).sum().item<double>();
        g.agree += p.a.argmax.eq(p.b.argmax).sum().item<double>();
        g.tokens = targets.size(0);
      },
      [](std::size_t) {});
  const GroupSums t = Total(std::move(sums), s.across_ranks);
  progress.Update(offset + Lb + 1);
  const double seconds = progress.ElapsedSeconds() / 2;
  ComparisonResult r;
  const int n = static_cast<int>(s.windows.size());
  r.base = Finish(n, t.tokens, t.nll_a, t.correct_a, seconds);
  r.other = Finish(n, t.tokens, t.nll_b, t.correct_b, seconds);
  // KL is >= 0; a sum of float32 terms can land a hair below zero when the models agree.
  r.kl = std::max(0.0, t.kl / static_cast<double>(t.tokens));
  r.top1_agreement = t.agree / static_cast<double>(t.tokens);
  r.delta_nll = r.other.mean_nll - r.base.mean_nll;
  return r;
}

}  // namespace

ComparisonResult CompareModels(const ReferenceModel& base, const ReferenceModel& other,
                               const std::vector<TokenWindow>& windows, std::int32_t bos,
                               const EvalOptions& options) {
  CheckComparable(base, other);
  // One model after the other: each holds one layer at a time, both keep their hidden states.
  const std::int64_t La = base.impl().config.num_hidden_layers;
  Progress progress("compare", La + other.impl().config.num_hidden_layers + 1, "layers",
                    options.progress);
  const auto swept = SweepBase(base, windows, bos, options, progress);
  return Score(*swept, other, options, progress, La);
}

ReferenceSweep SweepReference(const ReferenceModel& base, const std::vector<TokenWindow>& windows,
                              std::int32_t bos, const EvalOptions& options) {
  Progress progress("reference", base.impl().config.num_hidden_layers, "layers", options.progress);
  return ReferenceSweep(SweepBase(base, windows, bos, options, progress));
}

ComparisonResult CompareModels(const ReferenceSweep& base, const ReferenceModel& other,
                               const EvalOptions& options) {
  const ReferenceSweep::State& s = *base.state_;
  CheckComparable(*s.base, other);
  if (options.scored_from != s.scored_from || options.across_ranks != s.across_ranks ||
      options.batch_windows != s.batch_windows) {
    Fail("eval", "internal: a reference sweep compared under other options than it was made with");
  }
  Progress progress("compare", other.impl().config.num_hidden_layers + 1, "layers",
                    options.progress);
  ComparisonResult r = Score(s, other, options, progress, 0);
  r.base.seconds = s.seconds;  // the reference ran once, before
  r.other.seconds = progress.ElapsedSeconds();
  r.base.tokens_per_second = static_cast<double>(r.base.tokens_predicted) / s.seconds;
  r.other.tokens_per_second = static_cast<double>(r.other.tokens_predicted) / r.other.seconds;
  return r;
}

}  // namespace kvfold
