// What heal trains on (calib/layer_heal.h): windows kept by index, merged in window order from
// any number of collectors, and the trajectory target's residual difference.
#include "calib/layer_heal.h"

#include <catch2/catch.hpp>
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
  parts.push_back(b.Take());
  parts[1].context.assign(2 * 2 * 2, 0.0f);  // a part the other collector saw in full
  for (std::size_t i = 0; i < 2; ++i) {
    for (std::size_t j = 0; j < 4; ++j) parts[1].context[i * 4 + j] = (j % 2 ? -1.f : 1.f) * i;
  }
  const HealWindows all = MergeHealWindows(parts);
  CHECK(all.sequences == std::vector<std::int64_t>{0, 1, 2, 3, 4});
  CHECK(all.input == std::vector<float>{0, 0, 1, 1, 2, 2, 3, 3, 4, 4});
  CHECK(all.context.size() == 5 * 4);
  CHECK(all.context[4 * 4] == 4.f);
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
  const HealWindows t = TrajectoryWindows(c, s);
  CHECK(t.input == c.input);
  CHECK(t.context == s.context);
  REQUIRE(t.residual.size() == 8);
  for (std::size_t i = 0; i < 8; ++i) CHECK(t.residual[i] == 2.0f * c.input[i]);  // 3w - w
  HealCollector fewer(3, 2, kCaptureContext | kCaptureResidual);
  Feed(fewer, 0, 4, 3.0f);
  CHECK_THROWS_WITH(TrajectoryWindows(c, fewer.Take()), Catch::Contains("different windows"));
}
