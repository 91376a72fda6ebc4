// Helpers shared by the runtime_check tests: a deterministic probe sequence, logit comparison,
// and loading a model with or without the fused CPU kernels.
#pragma once

#include <algorithm>
#include <catch2/catch.hpp>
#include <cmath>
#include <memory>
#include <vector>

#include "formats/checkpoint.h"
#include "runtime_check/reference_model.h"

namespace kvfold::test {

// BOS, then ids spread over the vocabulary (above the control pieces).
inline std::vector<std::int32_t> SomeTokens(std::size_t n, int vocab) {
  std::vector<std::int32_t> ids(n);
  ids[0] = 1;
  for (std::size_t i = 1; i < n; ++i)
    ids[i] = static_cast<std::int32_t>(3 + (i * 7919) % (vocab - 3));
  return ids;
}

inline double MaxAbsDiff(const std::vector<float>& a, const std::vector<float>& b) {
  REQUIRE(a.size() == b.size());
  double worst = 0;
  for (std::size_t i = 0; i < a.size(); ++i) worst = std::max(worst, double(std::abs(a[i] - b[i])));
  return worst;
}

inline std::unique_ptr<ReferenceModel> LoadModel(const Checkpoint& ck, bool fused) {
  RuntimeOptions o;
  o.threads = 2;
  o.fused_cpu_kernels = fused;
  return ReferenceModel::Load(ck, o);
}

}  // namespace kvfold::test
