// A random attention layer for the fold math's tests.
#pragma once

#include <random>
#include <vector>

#include "converter/passes/gqa_fold.h"

namespace kvfold::test {

// H query heads, KV key/value heads, head dim d, hidden D; weights N(0, 1) drawn from `rng`
// in the order wq, wk, wv, wo.
inline AttentionProjections RandomLayer(std::int64_t H, std::int64_t KV, std::int64_t d,
                                        std::int64_t D, std::mt19937& rng) {
  std::normal_distribution<double> n01;
  AttentionProjections p;
  p.heads = H;
  p.kv_heads = KV;
  p.head_dim = d;
  p.hidden = D;
  auto fill = [&](std::int64_t n) {
    std::vector<double> v(static_cast<std::size_t>(n));
    for (auto& x : v) x = n01(rng);
    return v;
  };
  p.wq = fill(H * d * D);
  p.wk = fill(KV * d * D);
  p.wv = fill(KV * d * D);
  p.wo = fill(D * H * d);
  return p;
}

}  // namespace kvfold::test
