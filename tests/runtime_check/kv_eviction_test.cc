#include "runtime_check/kv_eviction.h"

#include <catch2/catch.hpp>
#include <cmath>
#include <iterator>
#include <random>
#include <set>

#include "calib/norm_attention.h"
#include "formats/checkpoint.h"
#include "formats/error.h"
#include "runtime_check/reference_model.h"
#include "tests/runtime_check/runtime_test_support.h"
#include "tests/test_support.h"

using namespace kvfold;
using kvfold::test::MaxAbsDiff;
using kvfold::test::SharedPath;
using kvfold::test::SomeTokens;

namespace {

// A hand-built head: key j = (norm_j, 0), one query head whose query i is queries[i] (2-d).
struct ToyHead {
  std::vector<float> keys, queries;
  HeadTensors tensors;
  explicit ToyHead(const std::vector<float>& norms, std::vector<float> q = {}) {
    const auto T = static_cast<std::int64_t>(norms.size());
    for (float n : norms) keys.insert(keys.end(), {n, 0.0f});
    queries = q.empty() ? std::vector<float>(static_cast<std::size_t>(2 * T), 0.0f) : std::move(q);
    tensors.tokens = T;
    tensors.head_dim = 2;
    tensors.group = 1;
    tensors.keys = keys.data();
    tensors.key_stride = 2;
    tensors.queries = queries.data();
    tensors.query_stride = 2;
    tensors.scale = 1.0f;
  }
};

std::vector<std::uint8_t> Visibility(const HeadEviction& e, const ToyHead& head) {
  const auto T = static_cast<std::size_t>(head.tensors.tokens);
  std::vector<std::uint8_t> v(T * T, 7);
  EvictionVisibility(e, head.tensors, v.data());
  return v;
}

std::set<std::int64_t> Row(const std::vector<std::uint8_t>& v, std::int64_t T, std::int64_t i) {
  std::set<std::int64_t> keys;
  for (std::int64_t j = 0; j < T; ++j) {
    REQUIRE((v[static_cast<std::size_t>(i * T + j)] == 0 ||
             v[static_cast<std::size_t>(i * T + j)] == 1));
    if (v[static_cast<std::size_t>(i * T + j)]) keys.insert(j);
  }
  return keys;
}

// After prefilling P of T tokens, query i >= P reads exactly `kept` plus [P, i].
void CheckPrefill(const std::vector<std::uint8_t>& v, std::int64_t T, std::int64_t P,
                  const std::set<std::int64_t>& kept) {
  for (std::int64_t i = 0; i < T; ++i) {
    std::set<std::int64_t> want;
    for (std::int64_t j = 0; j <= i; ++j) {
      if (i < P || j >= P || kept.count(j)) want.insert(j);
    }
    INFO("query " << i);
    CHECK(Row(v, T, i) == want);
  }
}

HeadEviction Prefill(EvictPolicy policy, double keep, std::int64_t prefix) {
  HeadEviction e;
  e.policy = policy;
  e.regime = EvictRegime::kPrefill;
  e.keep = keep;
  e.prefix = prefix;
  return e;
}

HeadEviction Stream(EvictPolicy policy, std::int64_t max_cache, double keep = 1.0) {
  HeadEviction e;
  e.policy = policy;
  e.regime = EvictRegime::kStream;
  e.max_cache = max_cache;
  e.keep = keep;
  return e;
}

const std::vector<float> kNorms = {5, 1, 4, 2, 6, 3, 0.5f, 7};

}  // namespace

TEST_CASE("prefill eviction keeps exactly the tokens each policy ranks first", "[eviction]") {
  const ToyHead head(kNorms);
  // Prefix of 6 (norms 5 1 4 2 6 3), keep half: 3 tokens.
  CheckPrefill(Visibility(Prefill(EvictPolicy::kL2Low, 0.5, 6), head), 8, 6, {1, 3, 5});
  CheckPrefill(Visibility(Prefill(EvictPolicy::kL2High, 0.5, 6), head), 8, 6, {0, 2, 4});
  CheckPrefill(Visibility(Prefill(EvictPolicy::kRecent, 0.5, 6), head), 8, 6, {3, 4, 5});
  CheckPrefill(Visibility(Prefill(EvictPolicy::kL2Low, 1.0, 6), head), 8, 6, {0, 1, 2, 3, 4, 5});
}

TEST_CASE("random eviction keeps the requested count, seeded", "[eviction]") {
  const ToyHead head(std::vector<float>(64, 1.0f));
  auto kept = [&](std::uint64_t seed) {
    HeadEviction e = Prefill(EvictPolicy::kRandom, 0.25, 48);
    e.seed = seed;
    const auto v = Visibility(e, head);
    std::set<std::int64_t> prefix_keys = Row(v, 64, 63);
    for (std::int64_t j = 48; j < 64; ++j) prefix_keys.erase(j);
    return prefix_keys;
  };
  CHECK(kept(1).size() == 12);
  CHECK(kept(1) == kept(1));
  CHECK(kept(1) != kept(2));
}

TEST_CASE("attention-oracle keeps the keys the prefill queries attended to", "[eviction]") {
  // Keys 1 and 3 are aligned with every query and 30x longer: once visible, they take all the
  // attention. Accumulated over queries 0..5: key 0 gets 1 (query 0 sees only it), key 1 gets
  // 1 + 1 + 1/2 * 3, key 3 gets 1/2 * 3, keys 2, 4, 5 get ~0.
  const std::vector<float> norms = {1, 30, 1, 30, 1, 1, 1, 1};
  std::vector<float> q;
  for (int i = 0; i < 8; ++i) q.insert(q.end(), {1.0f, 0.0f});
  const ToyHead head(norms, q);
  CheckPrefill(Visibility(Prefill(EvictPolicy::kAttentionOracle, 0.5, 6), head), 8, 6, {0, 1, 3});
}

TEST_CASE("the prefill attention-oracle drops in kv-norm-analysis's ideal order: its ALR is zero",
          "[eviction]") {
  // Random post-RoPE-like data: 2 query heads on one KV head. The oracle accumulates the prefill
  // queries' attention, which is exactly the analysis's attention received on the prefix.
  const std::int64_t T = 21, P = 20, d = 4;
  std::mt19937 rng(4);
  std::normal_distribution<float> n(0, 1.5f);
  std::vector<float> k(static_cast<std::size_t>(T * d)), q(static_cast<std::size_t>(T * 2 * d));
  for (auto& v : k) v = n(rng);
  for (auto& v : q) v = n(rng);
  HeadTensors x{T, d, 2, k.data(), d, q.data(), 2 * d, 0.5f};
  const std::vector<double> attention =
      AttentionReceived({P, d, 2, k.data(), d, q.data(), 2 * d, ScoreRule{}});
  auto kept = [&](std::int64_t m) {
    HeadEviction e = Prefill(EvictPolicy::kAttentionOracle, static_cast<double>(m) / P, P);
    std::vector<std::uint8_t> v(static_cast<std::size_t>(T * T));
    EvictionVisibility(e, x, v.data());
    std::set<std::int64_t> prefix_keys = Row(v, T, T - 1);
    prefix_keys.erase(T - 1);
    return prefix_keys;
  };
  std::vector<std::int64_t> order;  // the oracle's drop order: what leaves as keep shrinks
  std::set<std::int64_t> before = kept(P);
  for (std::int64_t m = P - 1; m >= 0; --m) {
    const std::set<std::int64_t> now = kept(m);
    REQUIRE(now.size() == static_cast<std::size_t>(m));
    std::vector<std::int64_t> left;
    std::set_difference(before.begin(), before.end(), now.begin(), now.end(),
                        std::back_inserter(left));
    REQUIRE(left.size() == 1);  // nested: one token leaves per step
    order.push_back(left.front());
    before = now;
  }
  CHECK(AttentionLossRatio(attention, order) == Approx(0.0).margin(1e-15));
  CHECK(AttentionLossRatio(attention, HighestFirst(attention)) > 0.01);  // and the measure can tell
}

TEST_CASE("streaming l2-low evicts the highest norm whenever the cache exceeds its size",
          "[eviction]") {
  const ToyHead head(kNorms);
  const auto v = Visibility(Stream(EvictPolicy::kL2Low, 3), head);
  // Worked by hand: the cache before each trim, then the highest norm leaves.
  CHECK(Row(v, 8, 0) == std::set<std::int64_t>{0});
  CHECK(Row(v, 8, 2) == std::set<std::int64_t>{0, 1, 2});
  CHECK(Row(v, 8, 3) == std::set<std::int64_t>{0, 1, 2, 3});  // then 0 (norm 5) goes
  CHECK(Row(v, 8, 4) == std::set<std::int64_t>{1, 2, 3, 4});  // then 4 (6) goes
  CHECK(Row(v, 8, 5) == std::set<std::int64_t>{1, 2, 3, 5});  // then 2 (4) goes
  CHECK(Row(v, 8, 6) == std::set<std::int64_t>{1, 3, 5, 6});  // then 5 (3) goes
  CHECK(Row(v, 8, 7) == std::set<std::int64_t>{1, 3, 6, 7});
}

TEST_CASE("streaming policies: recent is a sliding window, ratios cap the cache", "[eviction]") {
  const ToyHead head(kNorms);
  const auto recent = Visibility(Stream(EvictPolicy::kRecent, 3), head);
  for (std::int64_t i = 0; i < 8; ++i) {
    std::set<std::int64_t> want;
    for (std::int64_t j = std::max<std::int64_t>(0, i - 3); j <= i; ++j) want.insert(j);
    CHECK(Row(recent, 8, i) == want);
  }
  // keep = 0.5: the cache holds ceil(0.5 (i + 1)) tokens after step i; query i sees that + 1.
  const auto half = Visibility(Stream(EvictPolicy::kL2High, 0, 0.5), head);
  for (std::int64_t i = 0; i < 8; ++i) {
    const auto seen = static_cast<std::size_t>(i == 0 ? 1 : (i + 1) / 2 + 1);
    CHECK(Row(half, 8, i).size() == std::min<std::size_t>(seen, static_cast<std::size_t>(i + 1)));
  }
  // keep = 1: nothing is ever evicted.
  const auto all = Visibility(Stream(EvictPolicy::kL2Low, 0, 1.0), head);
  for (std::int64_t i = 0; i < 8; ++i)
    CHECK(Row(all, 8, i).size() == static_cast<std::size_t>(i + 1));
}

TEST_CASE("eviction specs parse, and bad ones are refused with the reason", "[eviction]") {
  const EvictionSpec s = ParseEvictionSpec("evict<policy=l2-low,keep=0.5,skip=0,1>");
  CHECK(s.policy == EvictPolicy::kL2Low);
  CHECK(s.keep == 0.5);
  CHECK(s.skip_layers == std::vector<int>{0, 1});
  CHECK(s.regime == EvictRegime::kPrefill);
  CHECK(ParseEvictionSpec(s.Text()).Text() == s.Text());
  const EvictionSpec t = ParseEvictionSpec("evict<policy=recent,regime=stream,max=64>");
  CHECK(t.max_cache == 64);
  CHECK(PrefixLength(s, 256) == 128);
  CHECK(PrefixLength(ParseEvictionSpec("evict<policy=random,prefix=100>"), 256) == 100);
  for (const char* bad :
       {"l2-low", "evict<policy=l3>", "evict<keep=0>", "evict<keep=1.5>", "evict<keep=abc>",
        "evict<max=10>", "evict<regime=stream,keep=0.5,max=3>", "evict<colour=red>",
        "evict<policy=table,keep=0.5>", "evict<skip=x>", "evict<keep=0.5,keep=0.4>"}) {
    INFO(bad);
    CHECK_THROWS_WITH(ParseEvictionSpec(bad), Catch::StartsWith("--kv-cache: "));
  }
}

namespace {

// Records the captures of every layer (pre-attention quantities only).
class KeyRecorder : public LayerObserver {
 public:
  unsigned Wants(int) const override { return kCaptureKeyPostRope | kCaptureValue; }
  void Observe(const AttentionCapture& c) override {
    std::vector<float> layer(c.key_post_rope.data, c.key_post_rope.data + c.key_post_rope.size());
    layer.insert(layer.end(), c.value.data, c.value.data + c.value.size());
    layers.push_back(std::move(layer));
  }
  std::vector<std::vector<float>> layers;
};

}  // namespace

TEST_CASE("keep=1 and skipped layers leave the forward bit for bit unchanged",
          "[eviction][runtime][shared]") {
  const Checkpoint ck = OpenCheckpoint(SharedPath("models/stories260K"));
  const auto ids = SomeTokens(128, static_cast<int>(ck.config.vocab_size));
  for (bool fused : {true, false}) {
    INFO("fused " << fused);
    const auto model = test::LoadModel(ck, fused);
    const std::vector<float> full = model->Logits(ids);
    // max=1000 > T runs the masked kernels with nothing hidden: still bit for bit.
    for (const char* spec :
         {"evict<policy=l2-low,keep=1>", "evict<policy=attention-oracle,regime=stream,keep=1>",
          "evict<policy=l2-low,regime=stream,max=1000>",
          "evict<policy=random,keep=0.3,skip=0,1,2,3,4>"}) {
      INFO(spec);
      const EvictionCachePolicy policy(ParseEvictionSpec(spec), ck.config);
      CHECK(model->Logits(ids, nullptr, &policy) == full);
    }
    // Evicting in the last layer only: every earlier layer's K/V (and the last layer's input)
    // are exactly the full cache's; the logits are not.
    const EvictionCachePolicy last_only(
        ParseEvictionSpec("evict<policy=l2-low,keep=0.25,skip=0,1,2,3>"), ck.config);
    KeyRecorder a, b;
    const std::vector<float> evicted = model->Logits(ids, &b, &last_only);
    model->Logits(ids, &a);
    CHECK(a.layers == b.layers);
    CHECK(evicted != full);
  }
}

TEST_CASE("streaming recent-window eviction equals sliding-window attention",
          "[eviction][runtime][shared]") {
  // Independent truth: a cache of M tokens plus the current one is a sliding window of M + 1.
  Checkpoint ck = OpenCheckpoint(SharedPath("models/mini-mha"));
  const auto ids = SomeTokens(160, static_cast<int>(ck.config.vocab_size));
  const EvictionCachePolicy recent(ParseEvictionSpec("evict<policy=recent,regime=stream,max=31>"),
                                   ck.config);
  for (bool fused : {true, false}) {
    INFO("fused " << fused);
    const std::vector<float> evicted = test::LoadModel(ck, fused)->Logits(ids, nullptr, &recent);
    Checkpoint windowed = OpenCheckpoint(SharedPath("models/mini-mha"));
    windowed.config.sliding_window = 32;
    CHECK(MaxAbsDiff(evicted, test::LoadModel(windowed, fused)->Logits(ids)) < 1e-5);
  }
}

TEST_CASE("masked attention agrees between the fused kernel and ATen",
          "[eviction][runtime][shared]") {
  const Checkpoint ck = OpenCheckpoint(SharedPath("models/mini-mha"));
  const auto ids = SomeTokens(200, static_cast<int>(ck.config.vocab_size));
  for (const char* spec :
       {"evict<policy=l2-low,keep=0.3>", "evict<policy=attention-oracle,regime=stream,keep=0.4>",
        "evict<policy=random,regime=stream,max=40,seed=3>"}) {
    INFO(spec);
    const EvictionCachePolicy policy(ParseEvictionSpec(spec), ck.config);
    const auto fused = test::LoadModel(ck, true)->Logits(ids, nullptr, &policy);
    const auto aten = test::LoadModel(ck, false)->Logits(ids, nullptr, &policy);
    CHECK(MaxAbsDiff(fused, aten) < 2e-5);
    CHECK(MaxAbsDiff(fused, test::LoadModel(ck, true)->Logits(ids)) > 1e-3);  // it did evict
  }
}

TEST_CASE("skip layers outside the model are refused", "[eviction][runtime][shared]") {
  const Checkpoint ck = OpenCheckpoint(SharedPath("models/stories260K"));
  CHECK_THROWS_WITH(EvictionCachePolicy(ParseEvictionSpec("evict<skip=0,9>"), ck.config),
                    Catch::Contains("skip layer 9 does not exist"));
}

TEST_CASE("cache specs are strict: no empty parameters, no repeated layers",
          "[eviction][runtime]") {
  CHECK_THROWS_WITH(ParseEvictionSpec("evict<keep=0.5,>"), Catch::Contains("empty parameter"));
  CHECK_THROWS_WITH(ParseEvictionSpec("evict<,>"), Catch::Contains("empty parameter"));
  CHECK_THROWS_WITH(ParseEvictionSpec("evict<skip=0,,1>"), Catch::Contains("empty parameter"));
  CHECK_THROWS_WITH(ParseEvictionSpec("evict<skip=1,0,1>"), Catch::Contains("lists a value twice"));
  CHECK(ParseEvictionSpec("evict<keep=0.5,skip=1,0>").Text() ==
        "evict<policy=l2-low,regime=prefill,keep=0.5,skip=0,1>");
}
