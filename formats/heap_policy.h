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
#pragma once

namespace kvfold {

void SetHeapPolicy();

// A layer is done: returns the heap's free pages to the system (glibc's malloc_trim) when more
// than 64 MiB, or more than twice the bytes in use, are free.
void ReleaseFreedHeap();

}  // namespace kvfold
