#include "formats/heap_policy.h"

#include <malloc.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <new>
#include <string>

namespace kvfold {

namespace {
constexpr std::size_t kMiB = 1024 * 1024;
constexpr std::size_t kMmapThreshold = 32 * kMiB;  // glibc's largest on 64-bit

std::atomic<bool> advise_huge_pages{false};

}  // namespace

void SetHeapPolicy() {
  // Fixed values: glibc's default raises the mmap threshold to the largest buffer freed so far,
  // which made the heap's use depend on the order of work.
  mallopt(M_MMAP_THRESHOLD, static_cast<int>(kMmapThreshold));
  mallopt(M_TRIM_THRESHOLD, 1024 * kMiB);  // free memory is kept until ReleaseFreedHeap
  const char* huge = std::getenv("KVFOLD_HUGE_PAGES");
  advise_huge_pages.store(huge == nullptr || std::string(huge) != "0", std::memory_order_relaxed);
}

void ReleaseFreedHeap() {
  const struct mallinfo2 heap = mallinfo2();
  if (heap.fordblks > std::min(2 * heap.uordblks, 64 * kMiB)) malloc_trim(0);
}

bool AdvisesHugePages(std::size_t bytes) {
  return !KVFOLD_SANITIZED && bytes >= kMmapThreshold &&
         advise_huge_pages.load(std::memory_order_relaxed);
}

void AdviseHugePages(void* p, std::size_t bytes) {
  static const std::uintptr_t page = static_cast<std::uintptr_t>(::sysconf(_SC_PAGESIZE));
  // From the page that holds p: glibc's mapping of the buffer begins there (its header), and one
  // advised range keeps it one mapping.
  const std::uintptr_t begin = reinterpret_cast<std::uintptr_t>(p) & ~(page - 1),
                       end = (reinterpret_cast<std::uintptr_t>(p) + bytes) & ~(page - 1);
  // Only advice: EINVAL where the kernel has no transparent huge pages changes nothing.
  if (end > begin) ::madvise(reinterpret_cast<void*>(begin), end - begin, MADV_HUGEPAGE);
}

}  // namespace kvfold

// The replaceable global operator new (operator new[] and the nothrow forms call it; operator
// delete's default, free, matches), so that every C++ container of kvfold's own is covered.
// Sanitizer builds keep the runtime's own (its operator delete would not match malloc).
#if !KVFOLD_SANITIZED
void* operator new(std::size_t bytes) {
  for (;;) {
    if (void* p = std::malloc(bytes == 0 ? 1 : bytes)) {
      if (kvfold::AdvisesHugePages(bytes)) kvfold::AdviseHugePages(p, bytes);
      return p;
    }
    const std::new_handler handler = std::get_new_handler();
    if (handler == nullptr) throw std::bad_alloc();
    handler();
  }
}
#endif
