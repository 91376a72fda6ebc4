// Per-layer KV-head counts under a total: the allocation gqa-svd<kv-heads=auto> makes from each
// layer's measured error at every count it could take.
#pragma once

#include <cstdint>
#include <vector>

namespace kvfold {

// One layer's choices: KV-head counts (each dividing the layer's current count) and the error
// measured at each.
struct KvHeadCurve {
  std::vector<std::int64_t> heads;
  std::vector<double> error;
};

// The counts, one per layer, of least summed error whose sum is at most `total` (exact, by
// dynamic programming over layers and heads); of equal errors, the fewest heads in all.
// Throws Error when even the smallest counts exceed `total`.
std::vector<std::int64_t> AllocateKvHeads(const std::vector<KvHeadCurve>& curves,
                                          std::int64_t total);

}  // namespace kvfold
