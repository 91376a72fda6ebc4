// llama.cpp's cache types against ggml itself: kvfold's block bytes and round-tripped values
// equal those of llama.cpp's own libggml-base (the build node-llama-cpp ships, tests/js) on fixed
// vectors: random values, a block of zeros, a single outlier, negative maxima, a constant block,
// values too small for iq4_nl's scale. Skipped with a warning where tests/js is not installed.
#include "calib/ggml_cache_types.h"

#include <dlfcn.h>

#include <catch2/catch.hpp>
#include <cmath>
#include <cstring>
#include <string>
#include <vector>

using namespace kvfold;

namespace {

using QuantizeFn = void (*)(const float*, void*, std::int64_t);
using DequantizeFn = void (*)(const void*, float*, std::int64_t);

void* Ggml() {
  static void* lib =
      ::dlopen(KVFOLD_SOURCE_DIR
               "/tests/js/node_modules/@node-llama-cpp/linux-x64/bins/linux-x64/libggml-base.so",
               RTLD_NOW | RTLD_LOCAL);
  return lib;
}

// The AVX2 build of ggml's CPU backend from the same package, initialised (ggml_cpu_init fills
// its tables, f16 conversion among them, where it has it); null where it does not load.
void* GgmlCpu() {
  static void* lib = [] {
    void* cpu = ::dlopen(KVFOLD_SOURCE_DIR
                         "/tests/js/node_modules/@node-llama-cpp/linux-x64/bins/"
                         "linux-x64/libggml-cpu-haswell.so",
                         RTLD_NOW | RTLD_LOCAL);
    const auto init = cpu ? reinterpret_cast<void (*)()>(::dlsym(cpu, "ggml_cpu_init")) : nullptr;
    if (init != nullptr) init();
    return cpu;
  }();
  return lib;
}

template <typename Fn>
Fn Symbol(const std::string& name) {
  Fn f = reinterpret_cast<Fn>(::dlsym(Ggml(), name.c_str()));
  if (f == nullptr) FAIL("libggml-base has no " << name);
  return f;
}

std::vector<std::vector<float>> Vectors() {
  std::vector<std::vector<float>> v;
  std::uint64_t s = 88172645463325252ULL;
  auto next = [&] {
    s ^= s << 13, s ^= s >> 7, s ^= s << 17;
    return static_cast<float>(static_cast<double>(s >> 11) / 9007199254740992.0 * 2 - 1);
  };
  std::vector<float> random(256);
  for (float& x : random) x = next() * 3.0f;
  v.push_back(random);
  v.push_back(std::vector<float>(64, 0.0f));  // blocks of zeros
  std::vector<float> outlier(64, 0.01f);
  outlier[7] = 40.0f;  // one outlier in a block of small values
  outlier[40] = -0.5f;
  v.push_back(outlier);
  std::vector<float> negative(64);
  for (std::size_t i = 0; i < negative.size(); ++i) negative[i] = -static_cast<float>(i % 32) - 1;
  v.push_back(negative);                      // the largest magnitude is negative
  v.push_back(std::vector<float>(32, 2.5f));  // constant
  std::vector<float> tiny(32, 1e-20f);
  tiny[3] = -3e-19f;
  v.push_back(tiny);
  std::vector<float> keys(128);
  for (std::size_t i = 0; i < keys.size(); ++i) keys[i] = (i % 32 < 4 ? 12.0f : 0.3f) * next();
  v.push_back(keys);  // a few large channels, as RoPE'd keys have
  return v;
}

}  // namespace

TEST_CASE("llama.cpp's cache types round-trip as ggml computes them", "[ggml][kvquant]") {
  if (Ggml() == nullptr) {
    WARN("SKIPPED: libggml-base from node-llama-cpp not installed (scripts/setup.sh): "
         << ::dlerror());
    return;
  }
  for (const char* name : {"q8_0", "q5_1", "q5_0", "q4_1", "q4_0", "iq4_nl", "f16", "bf16"}) {
    const GgmlCacheType type = *ParseGgmlCacheType(name);
    const std::string n = name;
    const bool half = n == "f16" || n == "bf16";
    for (const std::vector<float>& x : Vectors()) {
      std::vector<std::uint8_t> ours = GgmlQuantize(type, x.data(), x.size());
      std::vector<std::uint8_t> theirs(ours.size(), 0xAA);
      if (n == "f16") {
        Symbol<QuantizeFn>("ggml_fp32_to_fp16_row")(x.data(), theirs.data(), x.size());
      } else if (n == "bf16") {
        Symbol<QuantizeFn>("ggml_fp32_to_bf16_row_ref")(x.data(), theirs.data(), x.size());
      } else {
        Symbol<QuantizeFn>("quantize_row_" + n + "_ref")(x.data(), theirs.data(), x.size());
      }
      std::vector<float> back(x.size()), ggml_back(x.size());
      GgmlDequantize(type, theirs.data(), x.size(), back.data());
      if (!half)
        Symbol<DequantizeFn>("dequantize_row_" + n)(theirs.data(), ggml_back.data(), x.size());
      INFO(name << " on a vector starting " << x[0]);
      // iq4_nl leaves the levels of an all-but-zero block unset (ggml reads them times a zero
      // scale): compare what they decode to there, the bytes everywhere else.
      const bool zero_scale = n == "iq4_nl" && std::fabs(x[0]) < 1e-15f;
      if (!zero_scale) CHECK(ours == theirs);
      if (!half) CHECK(back == ggml_back);  // kvfold's reading of ggml's bytes
      std::vector<float> trip = x;
      GgmlRoundTrip(type, trip.data(), trip.size());
      if (!half) CHECK(trip == ggml_back);
      CHECK(GgmlBitsPerElement(type) == 8.0 * ours.size() / x.size());
    }
  }
}

TEST_CASE("queries read block-quantized keys as ggml's x86 flash attention converts them",
          "[ggml][kvquant]") {
  // The AVX2 build's quantize_row_q8_0 (what the CPU backend converts a query row with when K
  // is a block type), from the same package.
  void* cpu = GgmlCpu();
  if (Ggml() == nullptr || cpu == nullptr) {
    WARN("SKIPPED: libggml-cpu-haswell from node-llama-cpp not loadable: " << ::dlerror());
    return;
  }
  const auto quantize = reinterpret_cast<QuantizeFn>(::dlsym(cpu, "quantize_row_q8_0"));
  REQUIRE(quantize != nullptr);
  for (const std::vector<float>& x : Vectors()) {
    std::vector<std::uint8_t> blocks(x.size() / 32 * 34);
    quantize(x.data(), blocks.data(), static_cast<std::int64_t>(x.size()));
    std::vector<float> theirs(x.size());
    Symbol<DequantizeFn>("dequantize_row_q8_0")(blocks.data(), theirs.data(), x.size());
    for (GgmlCacheType k : {GgmlCacheType::kQ4_0, GgmlCacheType::kQ8_0, GgmlCacheType::kIQ4_NL}) {
      std::vector<float> ours = x;
      GgmlRoundQuery(k, ours.data(), ours.size());
      CHECK(ours == theirs);
    }
    std::vector<float> f16 = x;  // an f16 key cache reads f16 queries
    GgmlRoundQuery(GgmlCacheType::kF16, f16.data(), f16.size());
    std::vector<float> want = x;
    GgmlRoundTrip(GgmlCacheType::kF16, want.data(), want.size());
    CHECK(f16 == want);
  }
}

TEST_CASE("a score against a stored key is ggml's own dot product, q8_1 block sums included",
          "[ggml][kvquant]") {
  void* cpu = GgmlCpu();
  if (Ggml() == nullptr || cpu == nullptr) {
    WARN("SKIPPED: libggml-cpu-haswell from node-llama-cpp not loadable: " << ::dlerror());
    return;
  }
  REQUIRE(::dlsym(cpu, "ggml_cpu_init") != nullptr);  // the dot products need its tables
  using DotFn =
      void (*)(int, float*, std::size_t, const void*, std::size_t, const void*, std::size_t, int);
  struct Case {
    const char* key;
    const char* query;  // the key type's dot-product type
    std::size_t query_block_bytes;
  };
  const std::vector<float> x = Vectors().front();  // 256 values: keys and queries from it
  for (const Case& c :
       {Case{"q8_0", "q8_0", 34}, Case{"q5_1", "q8_1", 36}, Case{"q5_0", "q8_0", 34},
        Case{"q4_1", "q8_1", 36}, Case{"q4_0", "q8_0", 34}, Case{"iq4_nl", "q8_0", 34}}) {
    const GgmlCacheType type = *ParseGgmlCacheType(c.key);
    const auto quantize_key =
        reinterpret_cast<QuantizeFn>(::dlsym(cpu, (std::string("quantize_row_") + c.key).c_str()));
    const auto quantize_query = reinterpret_cast<QuantizeFn>(
        ::dlsym(cpu, (std::string("quantize_row_") + c.query).c_str()));
    const auto dot = reinterpret_cast<DotFn>(
        ::dlsym(cpu, (std::string("ggml_vec_dot_") + c.key + "_" + c.query).c_str()));
    REQUIRE((quantize_key && quantize_query && dot));
    const std::size_t n = 64;  // two blocks
    double worst = 0, worst_without_extras = 0;
    for (std::size_t k0 = 0; k0 + n <= x.size(); k0 += 32) {
      for (std::size_t q0 = 0; q0 + n <= x.size(); q0 += 64) {
        std::vector<float> key(x.begin() + k0, x.begin() + k0 + n), query(n);
        for (std::size_t i = 0; i < n; ++i) query[i] = x[q0 + i] * 0.5f + 0.2f;  // sum != 0
        for (std::size_t i = 0; i < n; ++i) key[i] += 1.5f;  // block minima far from 0
        std::vector<std::uint8_t> kb(n / 32 * GgmlBlockBytes(type)),
            qb(n / 32 * c.query_block_bytes);
        quantize_key(key.data(), kb.data(), n);
        quantize_query(query.data(), qb.data(), n);
        float theirs = 0;
        dot(static_cast<int>(n), &theirs, 0, kb.data(), 0, qb.data(), 0, 1);
        const std::size_t E = GgmlScoreExtras(type, n);
        std::vector<float> query_extras(E), key_extras(E);
        std::vector<std::uint8_t> ours_bytes = GgmlQuantize(type, key.data(), n);
        CHECK(ours_bytes == kb);  // the CPU backend stores the reference bytes
        GgmlKeyExtras(type, ours_bytes.data(), n, key_extras.data());
        GgmlRoundTrip(type, key.data(), n);
        GgmlRoundQuery(type, query.data(), n, query_extras.data());
        double ours = 0, magnitude = 0;
        for (std::size_t i = 0; i < n; ++i) {
          ours += static_cast<double>(query[i]) * key[i];
          magnitude += std::fabs(static_cast<double>(query[i]) * key[i]);
        }
        double extra = 0;
        for (std::size_t e = 0; e < E; ++e)
          extra += static_cast<double>(query_extras[e]) * key_extras[e];
        // ggml sums each block's integer products, then scales in float: the two orders of
        // float rounding differ by a few float epsilons of the magnitude.
        worst = std::max(worst, std::fabs(ours + extra - theirs) / magnitude);
        worst_without_extras = std::max(worst_without_extras, std::fabs(ours - theirs) / magnitude);
      }
    }
    INFO(c.key << ": worst relative difference " << worst << ", without the extras "
               << worst_without_extras);
    CHECK(worst < 4e-7);
    // The extras are what q8_1's f16 block sums change: without them the scores are off.
    if (GgmlScoreExtras(type, n) > 0) CHECK(worst_without_extras > 1e-5);
  }
}
