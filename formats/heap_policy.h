// How kvfold's processes use the C heap (glibc malloc), set once in main (tools/kvfold_main.cc,
// and the benches that time kvfold's work).
//
// A layer's work allocates the same few-MiB buffers over and over (a batch's projections, its
// attention, the next batch's; the statistics' float64 vectors). Each fresh mapping costs the
// kernel a zeroed page per 4 KiB at first touch, and those faults serialise the threads of one
// process. Buffers up to glibc's largest threshold (32 MiB) come from the heap, and freed memory
// stays there for reuse (LibTorch's tensors are also kept by size: runtime_check/tensor_cache.h).
// At a layer boundary ReleaseFreedHeap gives the free pages back once the free part of the heap
// exceeds 64 MiB or twice the part in use, whichever is less: a long model does not fragment the
// heap into a resident set that grows with its layer count (CTest streaming_memory), and a small
// layer does not fault in again what the last one freed (docs/results.md, "The tensor cache").
//
// Buffers of 32 MiB and more (a 7B layer's weights and float64 moments: 64-128 MiB each, too
// many and too varied to pool) are mapped by glibc on their own and unmapped when freed, so each
// is faulted in afresh. Once SetHeapPolicy has run, kvfold's operator new (heap_policy.cc) asks
// the kernel for transparent huge pages under them (madvise MADV_HUGEPAGE): one fault per 2 MiB
// instead of per 4 KiB. Where transparent huge pages are off (`never` in
// /sys/kernel/mm/transparent_hugepage/enabled) the advice changes nothing; under `always` it is
// already the default. KVFOLD_HUGE_PAGES=0 in the environment turns the advice off (a machine
// whose kernel stalls compacting memory for huge pages). docs/results.md, "The refit's ridges from
// one eigendecomposition, and huge pages for the large buffers".
#pragma once

#include <cstddef>

// Sanitizer builds (scripts/sanitize_readers.sh) keep the runtime's operator new.
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
#define KVFOLD_SANITIZED 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer) || \
    __has_feature(memory_sanitizer)
#define KVFOLD_SANITIZED 1
#endif
#endif
#ifndef KVFOLD_SANITIZED
#define KVFOLD_SANITIZED 0
#endif

namespace kvfold {

void SetHeapPolicy();

// Whether operator new advises huge pages for a buffer of `bytes` (SetHeapPolicy has run without
// KVFOLD_HUGE_PAGES=0, it is one glibc maps on its own and this is not a sanitizer build), and the
// advice itself on the whole pages of [p, p + bytes).
bool AdvisesHugePages(std::size_t bytes);
void AdviseHugePages(void* p, std::size_t bytes);

// A layer is done: returns the heap's free pages to the system (glibc's malloc_trim) when more
// than 64 MiB, or more than twice the bytes in use, are free.
void ReleaseFreedHeap();

}  // namespace kvfold
