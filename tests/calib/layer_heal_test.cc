// What heal trains on (calib/layer_heal.h): windows kept by index, merged in window order from
// any number of collectors, and the trajectory target's residual difference.
#include "calib/layer_heal.h"

#include <catch2/catch.hpp>
#include <memory>
#include <vector>

using namespace kvfold;

namespace {

// A batch of B windows of T = 2 tokens, D = 1, HD = 2, whose values name the window.
void Feed(HealCollector& c, std::int64_t first, std::int64_t B, float scale = 1) {
  std::vector<float> x, ctx, res;
  for (std::int64_t b = 0; b < B; ++b) {
    const float w = static_cast<float>(first + b);
    x.insert(x.end(), {w, w});
    ctx.insert(ctx.end(), {w, -w, w, -w});
    res.insert(res.end(), {scale * w, scale * w});
  }
  AttentionCapture cap;
  cap.layer = 3;
  cap.sequence = first;
  cap.attn_input = {x.data(), {B, 2, 1}};
  cap.context = {ctx.data(), {B, 2, 2}};
  cap.residual = {res.data(), {B, 2, 1}};
  c.Observe(cap);
}

}  // namespace

TEST_CASE("heal's windows: the first ones, in window order, whoever saw them", "[heal]") {
  HealCollector a(3, 5, kCaptureAttnInput | kCaptureContext), b(3, 5, kCaptureAttnInput);
  CHECK(a.Wants(3) == (kCaptureAttnInput | kCaptureContext));
  CHECK(a.Wants(2) == 0);
  Feed(a, 4, 2);  // windows 4 and 5: 5 is past the limit
  Feed(b, 0, 2);
  Feed(a, 2, 2);
  std::vector<HealWindows> parts;
  parts.push_back(a.Take());
  const HealWindows seen_by_b = b.Take();
  CHECK(seen_by_b.context.empty());
  // the part as a collector that saw it in full would have it
  parts.push_back(MakeHealWindows(2, 1, 2, seen_by_b.sequences, seen_by_b.input.All(),
                                  {0, 0, 0, 0, 1, -1, 1, -1}, {}, HealBudget(UINT64_MAX)));
  const HealWindows all = MergeHealWindows(parts);
  CHECK(all.sequences == std::vector<std::int64_t>{0, 1, 2, 3, 4});
  CHECK(all.input.All() == std::vector<float>{0, 0, 1, 1, 2, 2, 3, 3, 4, 4});
  CHECK(all.context.count() == 5);
  CHECK(all.context.All().size() == 5 * 4);
  CHECK(all.context.Read(4)[0] == 4.f);
  CHECK(all.context.Read(1) == std::vector<float>{1, -1, 1, -1});
  CHECK(all.T == 2);
  CHECK(all.D == 1);
  CHECK(all.HD == 2);
  CHECK(all.residual.empty());
  std::vector<HealWindows> twice = {all, all};
  CHECK_THROWS_WITH(MergeHealWindows(twice), Catch::Contains("captured twice"));
}

TEST_CASE("heal's trajectory target: the source stream's context, the residual difference",
          "[heal]") {
  HealCollector converted(3, 4, kCaptureAttnInput | kCaptureContext | kCaptureResidual);
  HealCollector source(3, 4, kCaptureContext | kCaptureResidual);
  Feed(converted, 0, 4, 1.0f);
  Feed(source, 0, 4, 3.0f);
  const HealWindows c = converted.Take(), s = source.Take();
  CHECK(s.input.empty());
  const HealWindows t = TrajectoryWindows(c, s, HealBudget(UINT64_MAX));
  CHECK(t.input.All() == c.input.All());
  CHECK(t.context.All() == s.context.All());
  const std::vector<float> residual = t.residual.All(), input = c.input.All();
  REQUIRE(residual.size() == 8);
  for (std::size_t i = 0; i < 8; ++i) CHECK(residual[i] == 2.0f * input[i]);  // 3w - w
  HealCollector fewer(3, 2, kCaptureContext | kCaptureResidual);
  Feed(fewer, 0, 4, 3.0f);
  CHECK_THROWS_WITH(TrajectoryWindows(c, fewer.Take(), HealBudget(UINT64_MAX)),
                    Catch::Contains("different windows"));
}

// --hidden-memory bounds heal's windows: what does not fit is read back from the spill file, the
// same floats in the same order, and the budget comes back when the windows go.
TEST_CASE("heal's windows past the memory budget spill and read back the same", "[heal][spill]") {
  for (const std::uint64_t budget_bytes : {std::uint64_t{0}, std::uint64_t{40}, UINT64_MAX}) {
    INFO("budget " << budget_bytes);
    const std::shared_ptr<MemoryBudget> budget = HealBudget(budget_bytes);
    {
      HealCollector a(3, 8, kCaptureAttnInput | kCaptureContext | kCaptureResidual, budget);
      HealCollector b(3, 8, kCaptureAttnInput | kCaptureContext | kCaptureResidual, budget);
      Feed(a, 4, 4, 2.0f);
      Feed(b, 0, 4, 2.0f);
      CHECK(budget->used() <= budget_bytes);
      std::vector<HealWindows> parts;
      parts.push_back(a.Take());
      parts.push_back(b.Take());
      const HealWindows all = MergeHealWindows(std::move(parts));
      std::vector<float> input, context, residual;
      for (float w = 0; w < 8; ++w) {
        input.insert(input.end(), {w, w});
        context.insert(context.end(), {w, -w, w, -w});
        residual.insert(residual.end(), {2 * w, 2 * w});
      }
      CHECK(all.input.All() == input);
      CHECK(all.context.All() == context);
      CHECK(all.residual.All() == residual);
      // 8 windows x (2 + 4 + 2) floats: 256 bytes; 40 bytes hold 4 of the 8-byte or 16-byte
      // blocks at most
      if (budget_bytes == UINT64_MAX) CHECK(budget->used() == 256);
      if (budget_bytes == 40) CHECK(budget->used() > 0);
      const HealWindows t = TrajectoryWindows(all, all, budget);
      CHECK(t.residual.All() == std::vector<float>(16, 0.0f));
      CHECK(budget->used() <= budget_bytes);
    }
    CHECK(budget->used() == 0);
  }
}
