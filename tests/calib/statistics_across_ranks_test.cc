#include "calib/statistics_across_ranks.h"

#include <catch2/catch.hpp>
#include <random>

#include "formats/error.h"

using namespace kvfold;

namespace {

template <class T>
std::vector<T> Random(std::size_t n, std::mt19937& rng) {
  std::normal_distribution<double> d;
  std::vector<T> v(n);
  for (auto& x : v) x = static_cast<T>(d(rng));
  return v;
}

LayerKvStatistics RandomLayer(std::mt19937& rng) {
  LayerKvStatistics s;
  s.key_pre_rope = Random<double>(16, rng);
  s.key_post_rope = Random<double>(16, rng);
  s.value = Random<double>(16, rng);
  s.query_energy = Random<double>(8, rng);
  s.key_min = Random<float>(4, rng);
  s.key_max = Random<float>(4, rng);
  s.value_min = Random<float>(4, rng);
  s.value_max = Random<float>(4, rng);
  s.query_pair_max = Random<float>(4, rng);
  s.key_pair_max = Random<float>(2, rng);
  s.norm_attention.resize(2);
  s.norm_attention[1].spearman = 0.25;
  s.norm_attention[1].loss_l2[3] = 0.5;
  return s;
}

}  // namespace

// What crosses between ranks must come back bit for bit: rank 0 merges what it unpacks.
TEST_CASE("statistics survive packing bit for bit", "[ranks]") {
  std::mt19937 rng(7);
  const LayerKvStatistics layer = RandomLayer(rng);
  LayerKvStatistics back;
  Unpack(Pack(layer), back);
  CHECK(back.key_pre_rope == layer.key_pre_rope);
  CHECK(back.value == layer.value);
  CHECK(back.query_energy == layer.query_energy);
  CHECK(back.key_max == layer.key_max);
  CHECK(back.key_pair_max == layer.key_pair_max);
  REQUIRE(back.norm_attention.size() == 2);
  CHECK(back.norm_attention[1].loss_l2[3] == 0.5);
  CHECK(Pack(back) == Pack(layer));

  KvStatistics all;
  all.collected = kStatValue | kStatLayerInputs;
  all.tokens = 1234;
  all.windows = 5;
  all.kv_heads = 2;
  all.head_dim = 2;
  all.hidden = 3;
  all.input_moments[{0, 2}] = Random<double>(16, rng);
  all.layers = {layer, LayerKvStatistics(), RandomLayer(rng)};
  KvStatistics all_back;
  Unpack(Pack(all), all_back);
  CHECK(all_back.tokens == 1234);
  CHECK(all_back.input_moments.at({0, 2}) == all.input_moments.at({0, 2}));
  CHECK(all_back.layers.size() == 3);
  CHECK(all_back.layers[1].value.empty());
  CHECK(Pack(all_back) == Pack(all));

  OutputRefitMoments m;
  m.dim = 4;
  m.fit.tokens = 9;
  m.fit.cc = Random<double>(16, rng);
  m.held_out.ss = Random<double>(16, rng);
  OutputRefitMoments m_back;
  Unpack(Pack(m), m_back);
  CHECK(m_back.fit.cc == m.fit.cc);
  CHECK(m_back.held_out.ss == m.held_out.ss);
  CHECK(m_back.fit.tokens == 9);
}

TEST_CASE("bytes that are not packed statistics are refused", "[ranks]") {
  std::mt19937 rng(8);
  const std::string bytes = Pack(RandomLayer(rng));
  LayerKvStatistics s;
  CHECK_THROWS_AS(Unpack(bytes.substr(0, bytes.size() - 1), s), Error);  // cut short
  CHECK_THROWS_AS(Unpack(bytes + "x", s), Error);                        // trailing bytes
  std::string huge = bytes;
  huge[0] = '\xff';  // a length far beyond the bytes
  CHECK_THROWS_AS(Unpack(huge, s), Error);
}

// With one process (no mpirun) joining changes nothing.
TEST_CASE("one rank: joining is the identity", "[ranks]") {
  std::mt19937 rng(9);
  LayerKvStatistics s = RandomLayer(rng);
  const std::string before = Pack(s);
  JoinAcrossRanks(s);
  CHECK(Pack(s) == before);
}
