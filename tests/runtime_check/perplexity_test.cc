#include <catch2/catch.hpp>
#include <cmath>

#include "calib/text.h"
#include "calib/tokenizer.h"
#include "calib/windows.h"
#include "formats/checkpoint.h"
#include "runtime_check/evaluate.h"
#include "tests/test_support.h"

using namespace kvfold;
using kvfold::test::SharedPath;

namespace {

struct Reference {
  const char* model;
  const char* text;
  double mean_nll;
  double ppl;
};

// ../shared/README.md, "Reference figures" (W = 256, N = 64, 16384 tokens predicted).
constexpr Reference kReferences[] = {
    {"stories260K", "tinystories/eval.txt", 1.855489, 6.3948},
    {"stories260K", "tinystories/calib.txt", 1.535308, 4.6428},
    {"stories260K", "wikitext-2/test.raw.txt", 4.787735, 120.0292},
    {"stories260K-mha", "tinystories/eval.txt", 1.855489, 6.3948},
    {"micro-mha", "wikitext-2/test.raw.txt", 4.254129, 70.3955},
    {"micro-mha", "wikitext-2/valid.tokens.txt", 2.766503, 15.9029},
    {"mini-mha", "wikitext-2/test.raw.txt", 4.127221, 62.0054},
    {"mini-mha", "wikitext-2/valid.tokens.txt", 2.640250, 14.0167},
    {"mini-mha-bf16-sharded", "wikitext-2/test.raw.txt", 4.127416, 62.0174},
};

}  // namespace

TEST_CASE("kvfold-ppl-v1 reproduces every reference perplexity", "[runtime][ppl][shared]") {
  for (const Reference& r : kReferences) {
    INFO(r.model << " on " << r.text);
    const Checkpoint ck = OpenCheckpoint(SharedPath(std::string("models/") + r.model));
    const auto tok = Tokenizer::Load(ck.tokenizer_path);
    const auto tokens = tok->Encode(LoadText(SharedPath(std::string("text/") + r.text)));
    const auto windows = CutWindows(tokens, 256, 64, r.text);
    const auto rt = ReferenceModel::Load(ck, {"cpu", 2});
    EvalOptions options;
    options.progress = false;
    const PerplexityResult p = EvaluatePerplexity(*rt, windows, tok->bos_id(), options);
    CHECK(p.windows == 64);
    CHECK(p.tokens_predicted == 16384);
    CHECK(std::abs(p.ppl / r.ppl - 1) < 1e-3);              // the bar: 0.1% relative
    CHECK(p.mean_nll == Approx(r.mean_nll).epsilon(1e-5));  // what float32 actually achieves
  }
}

TEST_CASE("without a BOS the window is fed as is and its first token is not scored",
          "[runtime][ppl][shared]") {
  // Property: window v = [t] + u fed without BOS predicts exactly what window u predicts with t as
  // its BOS (same contexts; the extra last input affects nothing before it under causal attention).
  const Checkpoint ck = OpenCheckpoint(SharedPath("models/micro-mha"));
  const auto tok = Tokenizer::Load(ck.tokenizer_path);
  const auto tokens = tok->Encode(LoadText(SharedPath("text/wikitext-2/test.raw.txt")));
  const auto u = CutWindows(tokens, 63, 8, "test.raw.txt");
  const std::int32_t t = tok->bos_id();
  std::vector<TokenWindow> v;
  for (const auto& w : u) {
    v.push_back({t});
    v.back().insert(v.back().end(), w.begin(), w.end());
  }
  const auto rt = ReferenceModel::Load(ck, {"cpu", 2});
  EvalOptions options;
  options.progress = false;
  const PerplexityResult with_bos = EvaluatePerplexity(*rt, u, t, options);
  const PerplexityResult without = EvaluatePerplexity(*rt, v, Tokenizer::kNoToken, options);
  CHECK(without.tokens_predicted == 8 * 63);  // 64-token windows, the first token of each unscored
  CHECK(without.tokens_predicted == with_bos.tokens_predicted);
  // Different sequence lengths block the GEMMs differently: float32 rounding only.
  CHECK(without.mean_nll == Approx(with_bos.mean_nll).epsilon(1e-5));
  CHECK(without.accuracy ==
        Approx(with_bos.accuracy).margin(1.0 / 504));  // at most one argmax tie flips
}
