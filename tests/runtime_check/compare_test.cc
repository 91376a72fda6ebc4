#include <catch2/catch.hpp>

#include "calib/text.h"
#include "calib/tokenizer.h"
#include "calib/windows.h"
#include "formats/checkpoint.h"
#include "runtime_check/data_parallel.h"
#include "runtime_check/evaluate.h"
#include "tests/test_support.h"

using namespace kvfold;
using kvfold::test::SharedPath;

namespace {

std::vector<TokenWindow> Windows(const Checkpoint& ck, const char* text, int n) {
  const auto tok = Tokenizer::Load(ck.tokenizer_path);
  return CutWindows(tok->Encode(LoadText(SharedPath(text))), 256, n, text);
}

EvalOptions Quiet() {
  EvalOptions o;
  o.progress = false;
  return o;
}

}  // namespace

TEST_CASE("a model compared with itself has zero KL and full agreement",
          "[runtime][compare][shared]") {
  const Checkpoint ck = OpenCheckpoint(SharedPath("models/stories260K"));
  const auto a = ReferenceModel::Load(ck, {"cpu", 2});
  const auto windows = Windows(ck, "text/tinystories/eval.txt", 8);
  const ComparisonResult c = CompareModels(*a, *a, windows, 1, Quiet());
  CHECK(c.kl == Approx(0).margin(1e-9));
  CHECK(c.top1_agreement == 1.0);
  CHECK(c.delta_nll == 0.0);
  CHECK(c.base.mean_nll == c.other.mean_nll);
}

TEST_CASE("duplicated KV heads change nothing; BF16 rounding changes a little",
          "[runtime][compare][shared]") {
  const Checkpoint gqa = OpenCheckpoint(SharedPath("models/stories260K"));
  const Checkpoint mha = OpenCheckpoint(SharedPath("models/stories260K-mha"));
  const auto windows = Windows(gqa, "text/tinystories/eval.txt", 8);
  const auto a = ReferenceModel::Load(gqa, {"cpu", 2});
  const auto b = ReferenceModel::Load(mha, {"cpu", 2});
  const ComparisonResult same = CompareModels(*a, *b, windows, 1, Quiet());
  CHECK(same.kl < 1e-7);               // only float32 rounding of differently shaped GEMMs
  CHECK(same.top1_agreement >= 0.99);  // other GEMM shapes: a near-tie may flip an argmax
  CHECK(std::abs(same.delta_nll) < 1e-6);

  const Checkpoint f32 = OpenCheckpoint(SharedPath("models/mini-mha"));
  const Checkpoint bf16 = OpenCheckpoint(SharedPath("models/mini-mha-bf16-sharded"));
  const auto mini_windows = Windows(f32, "text/wikitext-2/test.raw.txt", 4);
  const auto m32 = ReferenceModel::Load(f32, {"cpu", 2});
  const auto m16 = ReferenceModel::Load(bf16, {"cpu", 2});
  const ComparisonResult rounded = CompareModels(*m32, *m16, mini_windows, 1, Quiet());
  CHECK(rounded.kl > 1e-7);  // the rounding is visible...
  CHECK(rounded.kl < 1e-2);  // ...and small
  CHECK(rounded.top1_agreement > 0.95);
  CHECK(rounded.top1_agreement < 1.0);
  CHECK(rounded.delta_nll == Approx(rounded.other.mean_nll - rounded.base.mean_nll));
}

TEST_CASE("results do not depend on batch size or thread count", "[runtime][determinism][shared]") {
  const Checkpoint ck = OpenCheckpoint(SharedPath("models/micro-mha"));
  const auto windows = Windows(ck, "text/wikitext-2/test.raw.txt", 12);
  EvalOptions by3 = Quiet(), by5 = Quiet();
  by3.batch_windows = 3;
  by5.batch_windows = 5;
  const auto two = ReferenceModel::Load(ck, {"cpu", 2});
  const PerplexityResult a = EvaluatePerplexity(*two, windows, 1, by3);
  const PerplexityResult b = EvaluatePerplexity(*two, windows, 1, by5);
  const PerplexityResult again = EvaluatePerplexity(*two, windows, 1, by3);
  CHECK(a.mean_nll == again.mean_nll);  // bit-identical on a rerun
  // Other batch sizes give other GEMM shapes (and possibly kernels): a few float32 ulp.
  CHECK(a.mean_nll == Approx(b.mean_nll).epsilon(1e-6));
  CHECK(a.tokens_predicted == 12 * 256);
  // Other thread counts: windows run one per thread, each single-threaded, and are summed in
  // window order, so only the batch split matters. Each model is used right after loading
  // (Load sets LibTorch's global thread count).
  for (int threads : {1, 3}) {
    INFO(threads << " threads");
    const auto m = ReferenceModel::Load(ck, {"cpu", threads});
    const PerplexityResult t = EvaluatePerplexity(*m, windows, 1, by3);
    CHECK(t.mean_nll == Approx(a.mean_nll).epsilon(1e-6));
    CHECK(t.tokens_predicted == a.tokens_predicted);
  }
}

TEST_CASE("a short run gets a batch per thread; a long one batches of about 2048 tokens",
          "[runtime][determinism][shared]") {
  // One batch on two threads ran with LibTorch's and OpenBLAS's pools spinning against each
  // other; a batch per thread runs each single-threaded (docs/results.md, issue 27).
  const Checkpoint ck = OpenCheckpoint(SharedPath("models/micro-mha"));
  const auto two = ReferenceModel::Load(ck, {"cpu", 2});  // sets LibTorch's thread count
  CHECK(WindowsPerBatch(4, 256, true) == 2);
  CHECK(WindowsPerBatch(5, 256, true) == 2);  // 2 + 2 + 1: the last runs alone
  CHECK(WindowsPerBatch(1, 256, true) == 1);
  CHECK(WindowsPerBatch(64, 256, true) == 8);  // 2048 tokens
  CHECK(WindowsPerBatch(64, 4096, true) == 1);
  CHECK(WindowsPerBatch(4, 256, false) == 4);  // CUDA runs batches in order: one batch
  const auto windows = Windows(ck, "text/wikitext-2/test.raw.txt", 4);
  EvalOptions whole = Quiet();
  whole.batch_windows = 4;
  const PerplexityResult split = EvaluatePerplexity(*two, windows, 1, Quiet());
  // Other GEMM shapes: a few float32 ulp, as in the case above.
  CHECK(split.mean_nll ==
        Approx(EvaluatePerplexity(*two, windows, 1, whole).mean_nll).epsilon(1e-6));
  const auto three = ReferenceModel::Load(ck, {"cpu", 3});
  CHECK(WindowsPerBatch(4, 256, true) == 1);
}

TEST_CASE("a reference swept once scores every model as a fresh comparison does",
          "[runtime][compare][shared]") {
  const Checkpoint mha = OpenCheckpoint(SharedPath("models/stories260K-mha"));
  const Checkpoint gqa = OpenCheckpoint(SharedPath("models/stories260K"));
  const auto base = ReferenceModel::Load(mha, {"cpu", 2});
  const auto other = ReferenceModel::Load(gqa, {"cpu", 2});
  const auto windows = Windows(mha, "text/tinystories/eval.txt", 4);
  EvalOptions o = Quiet();
  o.scored_from = 128;
  const ReferenceSweep swept = SweepReference(*base, windows, 1, o);
  for (const auto* model : {base.get(), other.get()}) {
    // The same code on the same rows in the same order: the same numbers, bit for bit.
    const ComparisonResult fresh = CompareModels(*base, *model, windows, 1, o);
    const ComparisonResult reused = CompareModels(swept, *model, o);
    CHECK(reused.kl == fresh.kl);
    CHECK(reused.base.mean_nll == fresh.base.mean_nll);
    CHECK(reused.other.mean_nll == fresh.other.mean_nll);
    CHECK(reused.top1_agreement == fresh.top1_agreement);
  }
  EvalOptions other_positions = o;
  other_positions.scored_from = 0;
  CHECK_THROWS_WITH(CompareModels(swept, *other, other_positions),
                    Catch::Contains("other options than it was made with"));
}

TEST_CASE(
    "a comparison over vocabulary blocks read from the checkpoint equals one over the whole head",
    "[runtime][compare][vocab][shared]") {
  const Checkpoint f32 = OpenCheckpoint(SharedPath("models/mini-mha"));
  const Checkpoint bf16 = OpenCheckpoint(SharedPath("models/mini-mha-bf16-sharded"));
  const auto windows = Windows(f32, "text/wikitext-2/test.raw.txt", 4);
  RuntimeOptions streamed{"cpu", 2};
  streamed.stream_layers = true;  // head rows read block by block from the (tied) embedding
  const auto a = ReferenceModel::Load(f32, streamed);
  const auto b = ReferenceModel::Load(bf16, streamed);
  const ComparisonResult whole = CompareModels(*a, *b, windows, 1, Quiet());  // one block
  EvalOptions blocked = Quiet();
  blocked.vocab_block_rows = 300;  // 2048 ids: six blocks and a remainder
  blocked.logit_chunk_rows = 100;
  const ComparisonResult c = CompareModels(*a, *b, windows, 1, blocked);
  // The same float32 terms summed in another order. The KL (~1e-5 nats) is what is left of
  // sum p_a (la - lb) minus the lse difference, terms ~1e3 times larger: 1e-3 relative. NLL: 1e-6.
  CHECK(c.kl == Approx(whole.kl).epsilon(1e-3));
  CHECK(c.base.mean_nll == Approx(whole.base.mean_nll).epsilon(1e-6));
  CHECK(c.other.mean_nll == Approx(whole.other.mean_nll).epsilon(1e-6));
  CHECK(c.top1_agreement == Approx(whole.top1_agreement).margin(2.0 / c.base.tokens_predicted));
  CHECK(c.base.tokens_predicted == whole.base.tokens_predicted);
}
