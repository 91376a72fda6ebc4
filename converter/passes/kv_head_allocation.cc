#include "converter/passes/kv_head_allocation.h"

#include <algorithm>
#include <limits>
#include <string>

#include "formats/error.h"

namespace kvfold {

std::vector<std::int64_t> AllocateKvHeads(const std::vector<KvHeadCurve>& curves,
                                          std::int64_t total) {
  std::int64_t least = 0;
  for (const KvHeadCurve& c : curves) least += *std::min_element(c.heads.begin(), c.heads.end());
  if (least > total) {
    Fail("--passes", "gqa-svd: kv-head-total=" + std::to_string(total) +
                         " is below the fewest KV heads the layers can take (" +
                         std::to_string(least) + ")");
  }
  constexpr double kNone = std::numeric_limits<double>::infinity();
  const std::size_t width = static_cast<std::size_t>(total) + 1;
  // best[b]: least error of the layers so far using exactly b heads; pick[l][b]: layer l's
  // choice on that path.
  std::vector<double> best(width, kNone);
  best[0] = 0;
  std::vector<std::vector<int>> pick(curves.size(), std::vector<int>(width, -1));
  for (std::size_t l = 0; l < curves.size(); ++l) {
    std::vector<double> next(width, kNone);
    for (std::size_t b = 0; b < width; ++b) {
      if (best[b] == kNone) continue;
      for (std::size_t i = 0; i < curves[l].heads.size(); ++i) {
        const std::size_t to = b + static_cast<std::size_t>(curves[l].heads[i]);
        if (to >= width) continue;
        const double e = best[b] + curves[l].error[i];
        if (e < next[to]) {
          next[to] = e;
          pick[l][to] = static_cast<int>(i);
        }
      }
    }
    best = std::move(next);
  }
  std::size_t b = 0;
  for (std::size_t s = 1; s < width; ++s)
    if (best[s] < best[b]) b = s;
  std::vector<std::int64_t> heads(curves.size());
  for (std::size_t l = curves.size(); l-- > 0;) {
    const KvHeadCurve& c = curves[l];
    heads[l] = c.heads[static_cast<std::size_t>(pick[l][b])];
    b -= static_cast<std::size_t>(heads[l]);
  }
  return heads;
}

}  // namespace kvfold
