#include "converter/passes/kv_head_allocation.h"

#include <algorithm>
#include <catch2/catch.hpp>
#include <random>

#include "formats/error.h"

using namespace kvfold;

namespace {

// Every combination of the layers' choices: the least error within `total` heads, fewest heads
// among equals.
std::pair<double, std::int64_t> BruteForce(const std::vector<KvHeadCurve>& curves,
                                           std::int64_t total) {
  std::pair<double, std::int64_t> best{1e300, 0};
  std::vector<std::size_t> pick(curves.size(), 0);
  while (true) {
    double error = 0;
    std::int64_t heads = 0;
    for (std::size_t l = 0; l < curves.size(); ++l) {
      error += curves[l].error[pick[l]];
      heads += curves[l].heads[pick[l]];
    }
    if (heads <= total && (error < best.first || (error == best.first && heads < best.second)))
      best = {error, heads};
    std::size_t l = 0;
    while (l < curves.size() && ++pick[l] == curves[l].heads.size()) pick[l++] = 0;
    if (l == curves.size()) return best;
  }
}

}  // namespace

TEST_CASE("the KV-head allocation is the exact optimum under the total", "[allocation]") {
  std::mt19937 rng(7);
  std::uniform_real_distribution<double> u(0, 1);
  for (int trial = 0; trial < 200; ++trial) {
    std::vector<KvHeadCurve> curves(1 + trial % 5);
    std::int64_t all = 0;
    for (auto& c : curves) {
      const std::int64_t kv = std::int64_t{1} << (trial % 4);  // 1, 2, 4, 8 heads
      double e = 0;
      for (std::int64_t k = kv; k >= 1; k /= 2) {  // error grows as heads go
        c.heads.insert(c.heads.begin(), k);
        c.error.insert(c.error.begin(), k == kv ? 0.0 : (e += u(rng)));
      }
      all += kv;
    }
    const std::int64_t least = static_cast<std::int64_t>(curves.size());
    const std::int64_t total = least + static_cast<std::int64_t>(u(rng) * (all - least + 1));
    const std::vector<std::int64_t> heads = AllocateKvHeads(curves, total);
    double error = 0;
    std::int64_t used = 0;
    for (std::size_t l = 0; l < curves.size(); ++l) {
      const auto& c = curves[l];
      const auto at = std::find(c.heads.begin(), c.heads.end(), heads[l]);
      REQUIRE(at != c.heads.end());
      error += c.error[static_cast<std::size_t>(at - c.heads.begin())];
      used += heads[l];
    }
    const auto best = BruteForce(curves, total);
    INFO("trial " << trial << " total " << total);
    CHECK(used <= total);
    CHECK(error == Approx(best.first).margin(1e-12));  // sums in another order
    CHECK(used == best.second);
  }
}

TEST_CASE("a total below one head a layer is refused", "[allocation]") {
  const std::vector<KvHeadCurve> curves(3, KvHeadCurve{{1, 2}, {0.5, 0}});
  CHECK(AllocateKvHeads(curves, 6) == std::vector<std::int64_t>{2, 2, 2});
  CHECK(AllocateKvHeads(curves, 4) == std::vector<std::int64_t>{1, 1, 2});
  CHECK_THROWS_WITH(AllocateKvHeads(curves, 2), Catch::Contains("kv-head-total=2"));
}
