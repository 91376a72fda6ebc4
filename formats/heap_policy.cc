#include "formats/heap_policy.h"

#include <malloc.h>

#include <algorithm>
#include <cstddef>

namespace kvfold {

namespace {
constexpr std::size_t kMiB = 1024 * 1024;
}  // namespace

void SetHeapPolicy() {
  // Fixed values: glibc's default raises the mmap threshold to the largest buffer freed so far,
  // which made the heap's use depend on the order of work.
  mallopt(M_MMAP_THRESHOLD, 32 * kMiB);    // glibc's largest on 64-bit
  mallopt(M_TRIM_THRESHOLD, 1024 * kMiB);  // free memory is kept until ReleaseFreedHeap
}

void ReleaseFreedHeap() {
  const struct mallinfo2 heap = mallinfo2();
  if (heap.fordblks > std::min(2 * heap.uordblks, 64 * kMiB)) malloc_trim(0);
}

}  // namespace kvfold
