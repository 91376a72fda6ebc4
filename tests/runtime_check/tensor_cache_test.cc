// The tensor cache (runtime_check/tensor_cache.h): freed buffers come back for the same size, the
// cap holds, stale sizes leave, and the numbers do not change.
#include "runtime_check/tensor_cache.h"

#include <ATen/ATen.h>

#include <catch2/catch.hpp>
#include <cstdint>
#include <vector>

namespace kvfold {
namespace {

constexpr std::size_t kCap = std::size_t{4} << 20;

// Ages the cache until nothing is kept (every size goes stale after a few boundaries).
void EmptyCache() {
  for (int i = 0; i < 16 && TensorCacheCountsNow().kept_bytes > 0; ++i) AgeTensorCache();
}

TEST_CASE("the tensor cache gives a freed buffer back to the next request of its size",
          "[tensor_cache]") {
  InstallTensorCache(kCap);
  EmptyCache();
  void* first = nullptr;
  {
    const at::Tensor a = at::empty({1000, 10}, at::kFloat);
    first = a.data_ptr();
    CHECK(reinterpret_cast<std::uintptr_t>(first) % 64 == 0);  // as LibTorch aligns
  }
  CHECK(TensorCacheCountsNow().kept_bytes == 40000);
  const TensorCacheCounts before = TensorCacheCountsNow();
  const at::Tensor same = at::empty({10, 1000}, at::kFloat);  // same bytes, other shape
  CHECK(same.data_ptr() == first);
  CHECK(TensorCacheCountsNow().reused == before.reused + 1);
  CHECK(TensorCacheCountsNow().kept_bytes == 0);
  const at::Tensor other = at::empty({1000, 11}, at::kFloat);  // another size: from the heap
  CHECK(other.data_ptr() != first);
  CHECK(TensorCacheCountsNow().allocated == before.allocated + 1);
}

TEST_CASE("the tensor cache keeps at most its cap and drops sizes no one asks for",
          "[tensor_cache]") {
  InstallTensorCache(kCap);
  EmptyCache();
  {
    std::vector<at::Tensor> many;
    for (int i = 0; i < 8; ++i) many.push_back(at::empty({1 << 18}, at::kFloat));  // 1 MiB each
  }
  CHECK(TensorCacheCountsNow().kept_bytes == kCap);  // four kept, four back to the heap
  AgeTensorCache();
  CHECK(TensorCacheCountsNow().kept_bytes == kCap);  // one boundary: still wanted, perhaps
  for (int i = 0; i < 8; ++i) {
    at::empty({1 << 18}, at::kFloat);  // the size in use again: it stays
    AgeTensorCache();
  }
  CHECK(TensorCacheCountsNow().kept_bytes > 0);
  EmptyCache();
  CHECK(TensorCacheCountsNow().kept_bytes == 0);  // unused for a few boundaries: gone
}

TEST_CASE("results computed in reused buffers are those computed in fresh ones", "[tensor_cache]") {
  InstallTensorCache(kCap);
  at::manual_seed(3);
  const at::Tensor a = at::randn({64, 48}), b = at::randn({48, 32});
  EmptyCache();
  const at::Tensor fresh = at::matmul(a, b) + 1;
  for (int i = 0; i < 3; ++i) {
    at::Tensor garbage = at::full({64, 32}, 7.0f);  // leaves its bytes in the kept buffer
    garbage.reset();
    CHECK(at::equal(at::matmul(a, b) + 1, fresh));  // same process, same kernels: bit-equal
  }
  CHECK(TensorCacheCountsNow().reused > 0);
}

}  // namespace
}  // namespace kvfold
