#include "formats/heap_policy.h"

#include <malloc.h>

namespace kvfold {

void SetHeapPolicy() {
  // Fixed values: glibc's default raises the mmap threshold to the largest buffer freed so far,
  // which made the heap's use depend on the order of work.
  mallopt(M_MMAP_THRESHOLD, 32 * 1024 * 1024);    // glibc's largest on 64-bit
  mallopt(M_TRIM_THRESHOLD, 1024 * 1024 * 1024);  // free memory is kept until ReleaseFreedHeap
}

void ReleaseFreedHeap() { malloc_trim(0); }

}  // namespace kvfold
