// How kvfold's processes use the C heap (glibc malloc), set once in main (tools/kvfold_main.cc,
// and the benches that time kvfold's work).
//
// A layer's work allocates the same few-MiB buffers over and over (a batch's projections, its
// attention, the next batch's). Each fresh mapping costs the kernel a zeroed page per 4 KiB at
// first touch: with every buffer of 256 KiB or more mapped on its own, as before, that was a
// fifth to a quarter of kvfold's CPU time (docs/results.md, "The C heap"). Buffers up to glibc's
// largest threshold (32 MiB) now come from the heap, and freed memory stays there for reuse
// within the layer; at every layer boundary ReleaseFreedHeap gives the freed pages back, so a
// long model does not fragment the heap into a resident set that grows with its layer count
// (CTest streaming_memory).
#pragma once

namespace kvfold {

void SetHeapPolicy();

// Returns the heap's free pages to the system (glibc's malloc_trim): a layer is done, and the
// next one's buffers are allocated anew.
void ReleaseFreedHeap();

}  // namespace kvfold
