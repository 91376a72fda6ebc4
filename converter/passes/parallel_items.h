// ParallelItems: a pass's independent pieces of math (gqa-svd's KV groups, its query heads) spread
// over the threads --threads gives (LayerPassContext::threads). Each item writes only its own
// outputs, so the result does not depend on the thread count; the caller keeps BLAS on one
// thread (the layer loop's ScopedSingleThreadBlas), so that the threads are the items' and not
// OpenBLAS's pool waking for every small product (docs/results.md, "Why gqa-svd is slower at 2
// threads").
#pragma once

#include <cstdint>
#include <functional>

namespace kvfold {

// Calls item(i) for every i in [0, count), on min(threads, count) threads (this one included),
// items dealt round-robin. Rethrows the first item's exception, by thread order, after every
// thread has stopped.
void ParallelItems(std::int64_t count, int threads, const std::function<void(std::int64_t)>& item);

}  // namespace kvfold
