// Next-token statistics of scored rows, formed one block of the vocabulary at a time by an online
// log-sum-exp (the running maximum rescales what was summed, as in flash attention). Neither a
// [rows x vocab] logits tensor nor, from a streamed checkpoint, the whole LM head in float32 ever
// exists: a block of head rows is read once and applied to every row chunk before the next.
#pragma once

#include <ATen/ATen.h>

#include <cstdint>
#include <functional>

namespace kvfold {

// Where the logits of R rows come from, one vocabulary block at a time.
class LogitSource {
 public:
  virtual ~LogitSource() = default;
  virtual std::int64_t rows() const = 0;
  virtual std::int64_t vocab() const = 0;
  // Makes vocabulary ids [begin, begin + count) the current block (reads its head rows).
  virtual void Select(std::int64_t begin, std::int64_t count) = 0;
  // Logits [count, block] of rows [begin, begin + count) over the current block, float32.
  virtual at::Tensor Logits(std::int64_t begin, std::int64_t count) const = 0;
  // Vocabulary ids per block when the caller does not say.
  virtual std::int64_t DefaultBlock() const = 0;
};

// Rows already normalised [R, D] against head rows read on demand: head_rows(begin, count) ->
// [count, D] float32 on the rows' device.
class HeadLogits final : public LogitSource {
 public:
  using HeadRows = std::function<at::Tensor(std::int64_t begin, std::int64_t count)>;
  // softcap > 0: each logit becomes softcap tanh(logit / softcap) (Gemma 2's final soft-cap).
  HeadLogits(at::Tensor normed_rows, std::int64_t vocab, HeadRows head_rows, double softcap = 0);
  std::int64_t rows() const override { return rows_.size(0); }
  std::int64_t vocab() const override { return vocab_; }
  void Select(std::int64_t begin, std::int64_t count) override;
  at::Tensor Logits(std::int64_t begin, std::int64_t count) const override;
  std::int64_t DefaultBlock() const override;  // about 64 MiB of float32 head rows

 private:
  at::Tensor rows_, block_;
  std::int64_t vocab_;
  HeadRows head_rows_;
  double softcap_;
};

// Logits that exist already [R, V] (token-by-token decoding forms them).
class GivenLogits final : public LogitSource {
 public:
  explicit GivenLogits(at::Tensor logits) : logits_(std::move(logits)) {}
  std::int64_t rows() const override { return logits_.size(0); }
  std::int64_t vocab() const override { return logits_.size(1); }
  void Select(std::int64_t begin, std::int64_t count) override;
  at::Tensor Logits(std::int64_t begin, std::int64_t count) const override;
  std::int64_t DefaultBlock() const override { return vocab(); }

 private:
  at::Tensor logits_, block_;
};

struct VocabBlocking {
  std::int64_t vocab_rows = 0;  // vocabulary ids per block; 0 = the source's DefaultBlock
  std::int64_t row_chunk = 0;   // rows per logits chunk; 0 = about 32 MiB of logits
};

// Per row [R], float32: log-sum-exp of the logits, the target's logit, the first argmax.
struct RowScores {
  at::Tensor lse, target, argmax;
  at::Tensor TargetLogProb() const { return target - lse; }
};

struct PairScores {
  RowScores a, b;
  at::Tensor kl;  // [R] KL(softmax a || softmax b), nats, float64
};

// `targets`: int64 [R] on the rows' device.
RowScores ScoreRows(LogitSource& a, const at::Tensor& targets, const VocabBlocking& blocking);
// a and b must have the same rows and vocabulary.
PairScores CompareRows(LogitSource& a, LogitSource& b, const at::Tensor& targets,
                       const VocabBlocking& blocking);

}  // namespace kvfold
