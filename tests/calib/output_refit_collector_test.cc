// The refit's context collector (calib/output_refit_moments.h): contexts kept between the runs
// before and after a pass, in memory up to a budget and spilled beyond it.
#include <catch2/catch.hpp>
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

AttentionCapture Capture(std::int64_t batch, const std::vector<float>& context) {
  AttentionCapture c;
  c.layer = 3;
  c.sequence = batch * kB;
  c.context.data = context.data();
  c.context.shape = {kB, kT, kDim};
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

}  // namespace kvfold
