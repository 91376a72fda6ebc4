// Work on a few threads without LibTorch (calib/ and formats/ do not link it): the pieces of a
// long text, the documents of a JSON Lines file.
#pragma once

#include <cstddef>
#include <functional>

namespace kvfold {

// Calls fn(i) for every i in [0, count) on up to `threads` threads, this one included, each
// taking the next index as it finishes one. When calls throw, no index is started after the
// first failure, and the exception of the lowest failing index is rethrown here (indices are
// taken in order, so that is the lowest of all: the same error on every run).
void ParallelEach(std::size_t count, int threads, const std::function<void(std::size_t)>& fn);

}  // namespace kvfold
