#include "runtime_check/kv_quant.h"

#include <catch2/catch.hpp>
#include <cmath>
#include <random>

#include "calib/quantizers.h"
#include "formats/checkpoint.h"
#include "runtime_check/kv_eviction.h"
#include "tests/runtime_check/runtime_test_support.h"
#include "tests/test_support.h"

using namespace kvfold;
using kvfold::test::MaxAbsDiff;
using kvfold::test::SharedPath;
using kvfold::test::SomeTokens;

namespace {

// A toy layer: 1 sequence, 2 query heads on 1 KV head, d = 4, random rotated q/k/v rows.
struct ToyLayer {
  QkvLayout layout{1, 12, 2, 1, 4};
  std::vector<float> qkv;
  ModelConfig config;
  ToyLayer() {
    std::mt19937 rng(9);
    std::normal_distribution<float> n(0, 1);
    qkv.resize(static_cast<std::size_t>(layout.tokens * layout.row()));
    for (auto& v : qkv) v = n(rng);
    config.num_hidden_layers = 2;
    config.num_attention_heads = 2;
    config.num_key_value_heads = 1;
    config.head_dim = 4;
  }
  struct Result {
    std::vector<std::uint8_t> codes;
    std::vector<float> keys, values;
  };
  Result Run(const KvCachePolicy& policy, int layer = 1) const {
    const std::int64_t T = layout.tokens, d = layout.head_dim;
    Result r{std::vector<std::uint8_t>(static_cast<std::size_t>(T * T), 99),
             std::vector<float>(static_cast<std::size_t>(T * d)),
             std::vector<float>(static_cast<std::size_t>(T * d))};
    policy.HeadCache(layer, qkv.data(), layout, 0, 0, 0,
                     {r.codes.data(), r.keys.data(), r.values.data()});
    return r;
  }
  float Key(std::int64_t t, std::int64_t c) const {
    return qkv[static_cast<std::size_t>(t * layout.row() + 2 * 4 + c)];
  }
};

QuantCachePolicy Policy(const std::string& spec, const ModelConfig& config) {
  return QuantCachePolicy(ParseQuantSpec(spec), config, {});
}

// Bits of one cached cell under a scheme's codes: stored cells at `low`, others full (16).
double CodeBits(std::uint8_t code, double low_key, double low_value) {
  if (code == kCacheHidden) return 0;
  return ((code & kCacheQuantKey ? low_key : 16.0) + (code & kCacheQuantValue ? low_value : 16.0)) /
         2;
}

}  // namespace

TEST_CASE("rtn stores every token once, per-token quantized, and reads only stored copies",
          "[quant]") {
  const ToyLayer toy;
  const auto r = toy.Run(Policy("quant<scheme=rtn,bits=3>", toy.config));
  const std::int64_t T = 12;
  for (std::int64_t i = 0; i < T; ++i) {
    for (std::int64_t j = 0; j < T; ++j) {
      CHECK(r.codes[static_cast<std::size_t>(i * T + j)] ==
            (j <= i ? (kCacheVisible | kCacheQuantKey | kCacheQuantValue) : kCacheHidden));
    }
    float lo = 1e9f, hi = -1e9f;
    for (int c = 0; c < 4; ++c) lo = std::min(lo, toy.Key(i, c)), hi = std::max(hi, toy.Key(i, c));
    for (int c = 0; c < 4; ++c)
      CHECK(std::abs(r.keys[static_cast<std::size_t>(i * 4 + c)] - toy.Key(i, c)) <=
            (hi - lo) / 7 / 2 + 1e-6f);
  }
}

TEST_CASE("kivi quantizes a key block per channel once it is complete", "[quant]") {
  const ToyLayer toy;
  const auto r = toy.Run(Policy("quant<scheme=kivi,bits=2,block=4>", toy.config));
  auto code = [&](int i, int j) { return r.codes[static_cast<std::size_t>(i * 12 + j)]; };
  CHECK(code(2, 0) == (kCacheVisible | kCacheQuantValue));  // block 0..3 still filling
  CHECK(code(3, 0) == (kCacheVisible | kCacheQuantKey | kCacheQuantValue));  // complete at token 3
  CHECK(code(5, 3) == (kCacheVisible | kCacheQuantKey | kCacheQuantValue));
  CHECK(code(5, 4) == (kCacheVisible | kCacheQuantValue));  // residual block 4..7
  CHECK(code(5, 6) == kCacheHidden);
  // Per channel over the block: each channel of tokens 0..3 takes at most 4 levels, its min and
  // max.
  for (int c = 0; c < 4; ++c) {
    float lo = 1e9f, hi = -1e9f;
    for (int t = 0; t < 4; ++t) lo = std::min(lo, toy.Key(t, c)), hi = std::max(hi, toy.Key(t, c));
    for (int t = 0; t < 4; ++t)
      CHECK(std::abs(r.keys[static_cast<std::size_t>(t * 4 + c)] - toy.Key(t, c)) <=
            (hi - lo) / 3 / 2 + 1e-6f);
  }
}

TEST_CASE("mikv keeps its budget in high precision, demotes for good, and protects layers",
          "[quant]") {
  const ToyLayer toy;
  const QuantCachePolicy mikv =
      Policy("quant<scheme=mikv,bits=2,keep=0.25,recent=0.5,protect=0>", toy.config);
  const auto r = toy.Run(mikv);
  const std::int64_t T = 12;
  std::vector<bool> demoted(T, false);
  for (std::int64_t i = 0; i < T; ++i) {
    std::int64_t high = 0;
    for (std::int64_t j = 0; j <= i; ++j) {
      const std::uint8_t c = r.codes[static_cast<std::size_t>(i * T + j)];
      high += c == kCacheVisible;
      if (demoted[static_cast<std::size_t>(j)]) CHECK(c != kCacheVisible);  // never promoted back
      if (c != kCacheVisible) demoted[static_cast<std::size_t>(j)] = true;
    }
    CHECK(high == mikv.HighPrecisionTokens(i));
    CHECK(r.codes[static_cast<std::size_t>(i * T + i)] ==
          kCacheVisible);  // a new token starts high
  }
  CHECK(mikv.Untouched(0));
  CHECK_FALSE(mikv.Untouched(1));
  // bits=0: the demoted tokens are evicted instead.
  const auto e = toy.Run(Policy("quant<scheme=mikv,bits=0,keep=0.25>", toy.config));
  for (std::int64_t i = 0; i < T; ++i) {
    std::int64_t seen = 0;
    for (std::int64_t j = 0; j < T; ++j) {
      const std::uint8_t c = e.codes[static_cast<std::size_t>(i * T + j)];
      CHECK((c == kCacheHidden || c == kCacheVisible));
      seen += c == kCacheVisible;
    }
    CHECK(seen == mikv.HighPrecisionTokens(i));
  }
}

TEST_CASE("the bits accounting matches the codes the policies write", "[quant][eviction]") {
  const ToyLayer toy;
  const std::int64_t T = 12, from = 6;
  auto from_codes = [&](const KvCachePolicy& p, double low_key, double low_value) {
    double bits = 0, full = 0;
    for (int layer = 0; layer < 2; ++layer) {
      const auto r = toy.Run(p, layer);
      for (std::int64_t i = from; i < T; ++i) {
        for (std::int64_t j = 0; j <= i; ++j)
          bits += p.Untouched(layer)
                      ? 16
                      : CodeBits(r.codes[static_cast<std::size_t>(i * T + j)], low_key, low_value);
        full += static_cast<double>(i + 1);
      }
    }
    return bits / full;
  };
  const auto mikv = Policy("quant<scheme=mikv,bits=2,keep=0.3,protect=1>", toy.config);
  CHECK(mikv.AverageBits(T, from, 4) ==
        Approx(from_codes(mikv, AsymmetricBits(2, 4), AsymmetricBits(2, 4))));
  const auto kivi = Policy("quant<scheme=kivi,key-bits=2,value-bits=4,block=4>", toy.config);
  CHECK(kivi.AverageBits(T, from, 4) ==
        Approx(from_codes(kivi, AsymmetricBits(2, 4), AsymmetricBits(4, 4))));
  for (const char* spec :
       {"evict<policy=l2-low,keep=0.5,prefix=6>", "evict<policy=recent,regime=stream,keep=0.3>",
        "evict<policy=random,regime=stream,max=5,skip=0>"}) {
    INFO(spec);
    const EvictionCachePolicy evict(ParseEvictionSpec(spec), toy.config);
    CHECK(evict.AverageBits(T, from, 4) == Approx(from_codes(evict, 16, 16)));
  }
}

TEST_CASE("quant specs parse, and bad ones are refused with the reason", "[quant]") {
  const QuantSpec s =
      ParseQuantSpec("quant<scheme=mikv,key-bits=2,value-bits=4,keep=0.1,protect=0,1>");
  CHECK(s.scheme == QuantScheme::kMikv);
  CHECK(s.key_bits == 2);
  CHECK(s.value_bits == 4);
  CHECK(s.protect == std::vector<int>{0, 1});
  CHECK(ParseQuantSpec(s.Text()).Text() == s.Text());
  const QuantSpec g = ParseQuantSpec("ggml<v=q4_0,k=q8_0>");
  CHECK(g.scheme == QuantScheme::kGgml);
  CHECK(g.Text() == "ggml<k=q8_0,v=q4_0>");
  CHECK(ParseQuantSpec("quant<scheme=ggml,k=q8_0,v=q4_0>").Text() == g.Text());
  for (const char* bad :
       {"quant<scheme=int3>", "quant<bits=9>", "quant<scheme=rtn,bits=0>",
        "quant<scheme=mikv,keep=0>", "quant<scheme=mikv,key-bits=0,value-bits=2>",
        "quant<hi-bits=8>", "quant<scheme=mikv,key-axis=channel>", "quant<scheme=rtn,table=x.json>",
        "quant<scheme=mikv,keep=0.3,table=x.json>", "quant<colour=red>", "ggml<k=q3_K>",
        "ggml<k=q8_0,bits=4>", "quant<scheme=rtn,k=q8_0>"}) {
    INFO(bad);
    CHECK_THROWS_WITH(ParseQuantSpec(bad), Catch::StartsWith("--kv-cache: "));
  }
}

TEST_CASE("quantized caches in the forward: fused and ATen agree, keep=1 is exact, 8 bits is close",
          "[quant][runtime][shared]") {
  const Checkpoint ck = OpenCheckpoint(SharedPath("models/mini-mha"));
  const auto ids = SomeTokens(160, static_cast<int>(ck.config.vocab_size));
  const auto full = test::LoadModel(ck, true)->Logits(ids);
  for (const char* spec : {"quant<scheme=rtn,bits=3>", "quant<scheme=kivi,bits=2,block=16>",
                           "quant<scheme=mikv,bits=2,keep=0.3>"}) {
    INFO(spec);
    const QuantCachePolicy policy(ParseQuantSpec(spec), ck.config, {});
    const auto fused = test::LoadModel(ck, true)->Logits(ids, nullptr, &policy);
    CHECK(MaxAbsDiff(fused, test::LoadModel(ck, false)->Logits(ids, nullptr, &policy)) < 2e-5);
    CHECK(MaxAbsDiff(fused, full) > 1e-3);  // it did quantize
  }
  const QuantCachePolicy all_high(ParseQuantSpec("quant<scheme=mikv,bits=2,keep=1>"), ck.config,
                                  {});
  CHECK(test::LoadModel(ck, true)->Logits(ids, nullptr, &all_high) == full);
  // Error shrinks with bits: 8-bit RTN lands far closer to the full cache than 3-bit.
  const QuantCachePolicy int3(ParseQuantSpec("quant<scheme=rtn,bits=3>"), ck.config, {});
  const QuantCachePolicy int8(ParseQuantSpec("quant<scheme=rtn,bits=8>"), ck.config, {});
  const double err3 = MaxAbsDiff(test::LoadModel(ck, true)->Logits(ids, nullptr, &int3), full);
  const double err8 = MaxAbsDiff(test::LoadModel(ck, true)->Logits(ids, nullptr, &int8), full);
  CHECK(err8 < err3 / 10);
  // llama.cpp's cache types: f16 barely moves the logits, q4_0 keys / q4_1 values do. (No exact
  // fused-vs-ATen check here: their keys differ by ~1e-7 after RoPE, and grids this fine (f16:
  // 2^11 steps an octave) flip a few stored values under that; CTest llama_cpp compares the
  // simulation with llama.cpp itself instead.)
  const QuantCachePolicy f16(ParseQuantSpec("ggml<k=f16,v=f16>"), ck.config, {});
  const QuantCachePolicy q4(ParseQuantSpec("ggml<k=q4_0,v=q4_1>"), ck.config, {});
  const double err_f16 = MaxAbsDiff(test::LoadModel(ck, true)->Logits(ids, nullptr, &f16), full);
  const double err_q4 = MaxAbsDiff(test::LoadModel(ck, true)->Logits(ids, nullptr, &q4), full);
  CHECK(err_f16 < 5e-3);
  CHECK(err_q4 > 10 * err_f16);
  // llama.cpp's blocks of 32 must tile head_dim: refused on stories260K's head_dim 8.
  CHECK_THROWS_WITH(QuantCachePolicy(ParseQuantSpec("ggml<k=q8_0,v=f16>"),
                                     OpenCheckpoint(SharedPath("models/stories260K")).config, {}),
                    Catch::Contains("blocks of 32 along head_dim, which 8 does not divide"));
  CHECK_NOTHROW(QuantCachePolicy(ParseQuantSpec("ggml<k=f16,v=bf16>"),
                                 OpenCheckpoint(SharedPath("models/stories260K")).config, {}));
}
