#include "runtime_check/vocab_blocks.h"

#include <algorithm>
#include <limits>
#include <tuple>
#include <utility>

#include "formats/error.h"
#include "runtime_check/llama_forward.h"

namespace kvfold {
namespace {

constexpr std::int64_t kHeadBlockFloats = std::int64_t{16} << 20;  // 64 MiB of head rows
constexpr std::int64_t kLogitChunkFloats = std::int64_t{8} << 20;  // 32 MiB of logits

// One model's running statistics over the blocks seen so far, per row.
struct Running {
  at::Tensor max, sum, target, argmax;
  Running(std::int64_t rows, const at::Device& device)
      : max(at::full({rows}, -std::numeric_limits<float>::infinity(),
                     at::TensorOptions(at::kFloat).device(device))),
        sum(at::zeros({rows}, at::TensorOptions(at::kFloat).device(device))),
        target(at::zeros({rows}, at::TensorOptions(at::kFloat).device(device))),
        argmax(at::zeros({rows}, at::TensorOptions(at::kLong).device(device))) {}

  RowScores Finish() const { return {max + at::log(sum), target, argmax}; }
};

// What one fold did: the factor the earlier sum was rescaled by [r], and exp(logits - new max)
// [r, n]; a KL accumulated on the same running maximum needs both.
struct Folded {
  at::Tensor rescale, weights;
};

// Folds logits [r, n] of vocabulary ids [v0, v0 + n) into rows [r0, r0 + r) of `s`.
Folded Fold(Running& s, std::int64_t r0, const at::Tensor& logits, std::int64_t v0,
            const at::Tensor& targets) {
  const std::int64_t r = logits.size(0), n = logits.size(1);
  at::Tensor max = s.max.narrow(0, r0, r), sum = s.sum.narrow(0, r0, r);
  at::Tensor target = s.target.narrow(0, r0, r), argmax = s.argmax.narrow(0, r0, r);
  at::Tensor block_max, block_argmax;
  std::tie(block_max, block_argmax) = logits.max(1);
  const at::Tensor new_max = at::maximum(max, block_max);
  Folded f{at::exp(max - new_max), at::exp(logits - new_max.unsqueeze(1))};
  sum.mul_(f.rescale).add_(f.weights.sum(1));
  // Strictly greater: an earlier block keeps a tie, so this is the first argmax, as at::argmax.
  argmax.copy_(at::where(block_max > max, block_argmax + v0, argmax));
  const at::Tensor t = targets.narrow(0, r0, r) - v0;
  const at::Tensor here = t.ge(0).logical_and(t.lt(n));
  target.copy_(
      at::where(here, logits.gather(1, t.clamp(0, n - 1).unsqueeze(1)).squeeze(1), target));
  max.copy_(new_max);
  return f;
}

// Calls visit(r0, logits_a, logits_b, v0) for every row chunk of every vocabulary block, blocks in
// order; logits_b is undefined without `b`.
template <typename Visit>
void ForEachBlock(LogitSource& a, LogitSource* b, const VocabBlocking& blocking, Visit visit) {
  const std::int64_t V = a.vocab(), R = a.rows();
  if (b != nullptr && (b->vocab() != V || b->rows() != R))
    Fail("eval", "internal: compared logits differ in shape");
  const std::int64_t per_block = blocking.vocab_rows > 0 ? blocking.vocab_rows : a.DefaultBlock();
  const std::int64_t chunk =
      blocking.row_chunk > 0
          ? blocking.row_chunk
          : std::max<std::int64_t>(1, kLogitChunkFloats / std::min(per_block, V));
  for (std::int64_t v0 = 0; v0 < V; v0 += per_block) {
    const std::int64_t n = std::min(per_block, V - v0);
    a.Select(v0, n);
    if (b != nullptr) b->Select(v0, n);
    for (std::int64_t r0 = 0; r0 < R; r0 += chunk) {
      const std::int64_t r = std::min(chunk, R - r0);
      visit(r0, a.Logits(r0, r), b != nullptr ? b->Logits(r0, r) : at::Tensor(), v0);
    }
  }
}

}  // namespace

HeadLogits::HeadLogits(at::Tensor normed_rows, std::int64_t vocab, HeadRows head_rows,
                       double softcap)
    : rows_(std::move(normed_rows)),
      vocab_(vocab),
      head_rows_(std::move(head_rows)),
      softcap_(softcap) {}

void HeadLogits::Select(std::int64_t begin, std::int64_t count) {
  block_ = at::Tensor();  // the previous block leaves before the next is read
  block_ = head_rows_(begin, count);
}

at::Tensor HeadLogits::Logits(std::int64_t begin, std::int64_t count) const {
  return SoftCap(at::linear(rows_.narrow(0, begin, count), block_), softcap_);
}

std::int64_t HeadLogits::DefaultBlock() const {
  return std::max<std::int64_t>(1, kHeadBlockFloats / std::max<std::int64_t>(1, rows_.size(1)));
}

void GivenLogits::Select(std::int64_t begin, std::int64_t count) {
  block_ = logits_.narrow(1, begin, count);
}

at::Tensor GivenLogits::Logits(std::int64_t begin, std::int64_t count) const {
  return block_.narrow(0, begin, count).to(at::kFloat);
}

RowScores ScoreRows(LogitSource& a, const at::Tensor& targets, const VocabBlocking& blocking) {
  Running s(a.rows(), targets.device());
  ForEachBlock(a, nullptr, blocking,
               [&](std::int64_t r0, const at::Tensor& la, const at::Tensor&, std::int64_t v0) {
                 Fold(s, r0, la, v0, targets);
               });
  return s.Finish();
}

PairScores CompareRows(LogitSource& a, LogitSource& b, const at::Tensor& targets,
                       const VocabBlocking& blocking) {
  Running sa(a.rows(), targets.device()), sb(a.rows(), targets.device());
  // sum over ids of exp(la - max_a) (la - lb), on a's running maximum
  at::Tensor weighted = at::zeros({a.rows()}, targets.options().dtype(at::kFloat));
  ForEachBlock(
      a, &b, blocking,
      [&](std::int64_t r0, const at::Tensor& la, const at::Tensor& lb, std::int64_t v0) {
        const Folded f = Fold(sa, r0, la, v0, targets);
        Fold(sb, r0, lb, v0, targets);
        weighted.narrow(0, r0, la.size(0)).mul_(f.rescale).add_((f.weights * (la - lb)).sum(1));
      });
  // KL = sum p_a (la - lb) - lse_a + lse_b, with sum p_a (la - lb) = weighted / sum_a. In
  // float64 and without forming either lse: a KL of 1e-5 nats is a difference of two lse of ~10,
  // which float32 would round by 1e-6 each.
  const auto d = [](const at::Tensor& t) { return t.to(at::kDouble); };
  const at::Tensor kl =
      d(weighted) / d(sa.sum) - (d(sa.max) - d(sb.max)) - (at::log(d(sa.sum)) - at::log(d(sb.sum)));
  return {sa.Finish(), sb.Finish(), kl};
}

}  // namespace kvfold
