// The refit's context collector (calib/output_refit_moments.h): contexts kept between the runs
// before and after a pass, in memory up to a budget and spilled beyond it.
#include <catch2/catch.hpp>
#include <cmath>
#include <cstdint>
#include <random>
#include <vector>

#include "calib/output_refit_moments.h"
#include "formats/error.h"

namespace kvfold {
namespace {

constexpr std::int64_t kB = 2, kT = 5, kDim = 6, kBatches = 4;

std::vector<float> RandomContext(std::mt19937& rng) {
  std::normal_distribution<float> normal;
  std::vector<float> x(static_cast<std::size_t>(kB * kT * kDim));
  for (float& v : x) v = normal(rng);
  return x;
}

// Batch `batch` of `windows` windows of `tokens` tokens, layer 3's contexts.
AttentionCapture Capture(std::int64_t batch, const std::vector<float>& context,
                         std::int64_t windows = kB, std::int64_t tokens = kT,
                         std::int64_t dim = kDim) {
  AttentionCapture c;
  c.layer = 3;
  c.sequence = batch * windows;
  c.context.data = context.data();
  c.context.shape = {windows, tokens, dim};
  return c;
}

// Both runs over kBatches batches (the second in reverse order, as another slot order would);
// `peak` gets the bytes kept in memory between them.
OutputRefitMoments Collect(std::uint64_t memory, std::uint64_t* peak = nullptr,
                           std::uint64_t* spilled = nullptr) {
  std::mt19937 rng(17);
  std::vector<std::vector<float>> before, after;
  for (int b = 0; b < kBatches; ++b) before.push_back(RandomContext(rng));
  for (int b = 0; b < kBatches; ++b) after.push_back(RandomContext(rng));
  OutputRefitCollector c(3, kBatches * kB, memory);
  for (int b = 0; b < kBatches; ++b) c.Observe(Capture(b, before[b]));
  if (peak != nullptr) *peak = c.resident_bytes();
  if (spilled != nullptr) *spilled = c.spilled_bytes();
  c.BeginConverted();
  for (int b = kBatches - 1; b >= 0; --b) c.Observe(Capture(b, after[b]));
  CHECK(c.resident_bytes() == 0);
  return c.Take();
}

}  // namespace

TEST_CASE("refit contexts beyond the memory budget wait in a spill file and sum the same",
          "[refit][spill]") {
  const std::uint64_t batch_bytes = kB * kT * kDim * sizeof(float);
  const OutputRefitMoments all_resident = Collect(UINT64_MAX);
  REQUIRE(all_resident.fit.tokens + all_resident.held_out.tokens == kBatches * kB * kT);
  REQUIRE(all_resident.held_out.tokens > 0);
  // None, some and all of the batches in memory.
  for (const std::uint64_t memory : {std::uint64_t{0}, batch_bytes + 1, 3 * batch_bytes}) {
    INFO("memory " << memory);
    std::uint64_t peak = 0, spilled = 0;
    const OutputRefitMoments m = Collect(memory, &peak, &spilled);
    CHECK(peak <= memory);
    CHECK(peak + spilled == kBatches * batch_bytes);  // every batch kept, one place or the other
    CHECK(spilled > 0);
    // Bit for bit: the same floats meet in the same order wherever they waited.
    CHECK(m.fit.cc == all_resident.fit.cc);
    CHECK(m.fit.cs == all_resident.fit.cs);
    CHECK(m.fit.ss == all_resident.fit.ss);
    CHECK(m.held_out.cs == all_resident.held_out.cs);
    CHECK(m.fit.tokens == all_resident.fit.tokens);
  }
}

TEST_CASE("a batch the second run changed or never ran is refused, spilled or not",
          "[refit][spill]") {
  for (const std::uint64_t memory : {std::uint64_t{0}, UINT64_MAX}) {
    std::mt19937 rng(3);
    const std::vector<float> x = RandomContext(rng);
    OutputRefitCollector c(3, 8, memory);
    c.Observe(Capture(0, x));
    c.Observe(Capture(1, x));
    c.BeginConverted();
    AttentionCapture shorter = Capture(0, x);
    shorter.context.shape = {kB, kT - 1, kDim};
    CHECK_THROWS_AS(c.Observe(shorter), Error);
    CHECK_THROWS_AS(c.Take(), Error);  // batch 1 never came back
  }
}

TEST_CASE("the refit's sums are each part's outer products, every element of both triangles",
          "[refit]") {
  // Two batches of 6 windows of 3 tokens (12 windows: 3, 7 and 11 held out). The first batch's
  // fit windows (0-2, 4, 5) are not side by side, the second's held-out ones (7, 11) neither.
  constexpr std::int64_t B = 6, T = 3, dim = 5, windows = 12;
  std::mt19937 rng(5);
  std::normal_distribution<float> normal;
  std::vector<std::vector<float>> source(2), converted(2);
  for (auto* runs : {&source, &converted}) {
    for (auto& x : *runs) {
      x.resize(static_cast<std::size_t>(B * T * dim));
      for (float& v : x) v = normal(rng);
    }
  }
  OutputRefitCollector collector(3, windows);
  for (std::int64_t b = 0; b < 2; ++b) collector.Observe(Capture(b, source[b], B, T, dim));
  collector.BeginConverted();
  for (std::int64_t b = 0; b < 2; ++b) collector.Observe(Capture(b, converted[b], B, T, dim));
  const OutputRefitMoments m = collector.Take();
  // Float64 sums of the same float32 values, window by window.
  std::vector<double> cc[2], cs[2], ss[2];
  for (int p = 0; p < 2; ++p) cc[p] = cs[p] = ss[p] = std::vector<double>(dim * dim, 0.0);
  for (std::int64_t b = 0; b < 2; ++b) {
    for (std::int64_t w = 0; w < B; ++w) {
      const int p = HeldOutWindow(b * B + w, windows) ? 1 : 0;
      for (std::int64_t t = 0; t < T; ++t) {
        const float* c = &converted[b][static_cast<std::size_t>((w * T + t) * dim)];
        const float* s = &source[b][static_cast<std::size_t>((w * T + t) * dim)];
        for (std::int64_t i = 0; i < dim; ++i) {
          for (std::int64_t j = 0; j < dim; ++j) {
            cc[p][i * dim + j] += double(c[i]) * c[j];
            cs[p][i * dim + j] += double(c[i]) * s[j];
            ss[p][i * dim + j] += double(s[i]) * s[j];
          }
        }
      }
    }
  }
  CHECK(m.fit.tokens == 9 * T);
  CHECK(m.held_out.tokens == 3 * T);
  const OutputRefitMoments::Part* parts[] = {&m.fit, &m.held_out};
  for (int p = 0; p < 2; ++p) {
    for (std::int64_t k = 0; k < dim * dim; ++k) {
      INFO("part " << p << " element " << k);
      // A few float32 products and sums of order-1 values: 1e-5 is some 100 roundings.
      CHECK(std::abs(parts[p]->cc[k] - cc[p][k]) < 1e-5);
      CHECK(std::abs(parts[p]->cs[k] - cs[p][k]) < 1e-5);
      CHECK(std::abs(parts[p]->ss[k] - ss[p][k]) < 1e-5);
    }
  }
}

}  // namespace kvfold
