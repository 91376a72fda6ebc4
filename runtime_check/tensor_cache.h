// LibTorch's CPU tensors kept for reuse (installed once in main: tools/kvfold_main.cc and the
// benches that time kvfold's work).
//
// A layer's work frees and allocates the same buffers batch after batch (projections, attention
// scores, Adam's moments). Coming fresh from the heap each time, their pages were zeroed by the
// kernel at first touch: a third of a conversion's CPU time was system time, and page faults in
// one address space serialise, so a second thread added little (issue 27; docs/results.md, "The
// tensor cache"). Freed buffers now wait, by exact size, for the next request of that size, up to
// a cap; a size no work has used for a few layer boundaries goes back to the heap, so one phase's
// buffers do not outlive it, and memory does not grow with the layer count (CTest
// streaming_memory).
#pragma once

#include <cstddef>
#include <cstdint>

namespace kvfold {

// Makes the cache LibTorch's CPU allocator. Buffers freed while more than `cap_bytes` are kept
// go straight back to the heap. Call before any tensor is allocated that should be reused.
void InstallTensorCache(std::size_t cap_bytes = std::size_t{256} << 20);

// A layer boundary: frees the buffers of every size not freed or reused for a few boundaries.
void AgeTensorCache();

// A layer boundary for the process's memory: AgeTensorCache, then the C heap's trim
// (formats/heap_policy.h), in that order, so that the buffers it drops can be trimmed.
void ReleaseLayerMemory();

struct TensorCacheCounts {
  std::int64_t reused = 0;     // requests served from the cache
  std::int64_t allocated = 0;  // requests that went to the heap
  std::size_t kept_bytes = 0;  // bytes waiting now
};
TensorCacheCounts TensorCacheCountsNow();

}  // namespace kvfold
