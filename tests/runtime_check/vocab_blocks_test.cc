// The vocabulary-blocked scores against log-softmax of whole logits in float64, written here.
#include "runtime_check/vocab_blocks.h"

#include <ATen/ATen.h>

#include <catch2/catch.hpp>

using namespace kvfold;

namespace {

// Random normalised rows, an LM head and targets: logits of a few units, like a real model's.
struct Problem {
  at::Tensor rows, head, targets;
};

Problem MakeProblem(std::int64_t R, std::int64_t D, std::int64_t V, std::uint64_t seed) {
  at::manual_seed(seed);
  return {at::randn({R, D}), at::randn({V, D}) * 0.7, at::randint(V, {R}, at::kLong)};
}

HeadLogits Source(const Problem& p) {
  const at::Tensor head = p.head;
  return HeadLogits(p.rows, head.size(0), [head](std::int64_t begin, std::int64_t count) {
    return head.narrow(0, begin, count);
  });
}

// log-softmax of the whole [R, V] logits, float64.
at::Tensor ReferenceLogProbs(const Problem& p) {
  return at::log_softmax(at::linear(p.rows.to(at::kDouble), p.head.to(at::kDouble)), -1);
}

double MaxAbs(const at::Tensor& t) { return t.abs().max().item<double>(); }

// Blockings that cut the vocabulary into uneven blocks and rows into uneven chunks, and none.
const VocabBlocking kBlockings[] = {{7, 5}, {1, 3}, {50, 1}, {0, 0}, {101, 37}};

}  // namespace

TEST_CASE("blocked row scores equal float64 log-softmax of whole logits", "[runtime][vocab]") {
  const Problem p = MakeProblem(37, 16, 101, 1);
  const at::Tensor ref = ReferenceLogProbs(p);
  const at::Tensor ref_target = ref.gather(1, p.targets.unsqueeze(1)).squeeze(1);
  for (const VocabBlocking& b : kBlockings) {
    INFO("vocab rows " << b.vocab_rows << ", row chunk " << b.row_chunk);
    HeadLogits source = Source(p);
    const RowScores s = ScoreRows(source, p.targets, b);
    // float32 logits of size ~10 against float64: 1e-4 absolute on a log-probability.
    CHECK(MaxAbs(s.TargetLogProb().to(at::kDouble) - ref_target) < 1e-4);
    // The argmax found is a largest logit (a near-tie may pick either of two equal maxima).
    const at::Tensor at_argmax = ref.gather(1, s.argmax.unsqueeze(1)).squeeze(1);
    CHECK(MaxAbs(at_argmax - std::get<0>(ref.max(1))) < 1e-4);
  }
}

TEST_CASE("the first of tied maxima is the argmax, across blocks as within one",
          "[runtime][vocab]") {
  at::Tensor logits = at::zeros({3, 10});
  logits[0][2] = 5;  // tie across blocks of 4: ids 2 and 9
  logits[0][9] = 5;
  logits[1][5] = 5;  // tie inside a block: ids 5 and 6
  logits[1][6] = 5;
  logits[2][8] = 5;
  const at::Tensor targets = at::tensor({9, 5, 0}, at::kLong);
  GivenLogits source(logits);
  const RowScores s = ScoreRows(source, targets, {4, 2});
  CHECK(s.argmax.equal(at::tensor({2, 5, 8}, at::kLong)));
  CHECK(s.argmax.equal(logits.argmax(1)));
}

TEST_CASE("blocked KL equals float64 KL of whole logits; a model against itself gives zero",
          "[runtime][vocab]") {
  const Problem p = MakeProblem(29, 12, 83, 2);
  Problem q = p;
  q.head = p.head + 0.3 * at::randn(p.head.sizes());
  const at::Tensor lp = ReferenceLogProbs(p), lq = ReferenceLogProbs(q);
  const at::Tensor ref_kl = (lp.exp() * (lp - lq)).sum(1);
  REQUIRE(ref_kl.min().item<double>() > 1e-3);  // the two differ: a KL that could be wrong
  for (const VocabBlocking& b : kBlockings) {
    INFO("vocab rows " << b.vocab_rows << ", row chunk " << b.row_chunk);
    HeadLogits a = Source(p), c = Source(q);
    const PairScores s = CompareRows(a, c, p.targets, b);
    // float32 terms of size ~10 summed over 83 ids: 1e-4 absolute.
    CHECK(MaxAbs(s.kl.to(at::kDouble) - ref_kl) < 1e-4);
    CHECK(MaxAbs(s.b.TargetLogProb().to(at::kDouble) -
                 lq.gather(1, p.targets.unsqueeze(1)).squeeze(1)) < 1e-4);
    HeadLogits a1 = Source(p), a2 = Source(p);
    CHECK(MaxAbs(CompareRows(a1, a2, p.targets, b).kl) < 1e-6);  // rounding of the same numbers
  }
}

TEST_CASE("a head source reads each vocabulary block once, in order, whatever the row count",
          "[runtime][vocab]") {
  const Problem p = MakeProblem(40, 8, 50, 3);
  std::vector<std::int64_t> reads;
  const at::Tensor head = p.head;
  HeadLogits source(p.rows, 50, [&](std::int64_t begin, std::int64_t count) {
    reads.push_back(begin);
    CHECK(count == std::min<std::int64_t>(16, 50 - begin));
    return head.narrow(0, begin, count);
  });
  ScoreRows(source, p.targets, {16, 3});
  CHECK(reads == std::vector<std::int64_t>{0, 16, 32, 48});
}
