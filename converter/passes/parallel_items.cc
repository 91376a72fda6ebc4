#include "converter/passes/parallel_items.h"

#include <algorithm>
#include <exception>
#include <thread>
#include <vector>

namespace kvfold {

void ParallelItems(std::int64_t count, int threads, const std::function<void(std::int64_t)>& item) {
  const std::int64_t n = std::max<std::int64_t>(1, std::min<std::int64_t>(threads, count));
  std::vector<std::exception_ptr> errors(static_cast<std::size_t>(n));
  auto work = [&](std::int64_t w) {
    try {
      for (std::int64_t i = w; i < count; i += n) item(i);
    } catch (...) {
      errors[static_cast<std::size_t>(w)] = std::current_exception();
    }
  };
  std::vector<std::thread> pool;
  for (std::int64_t w = 1; w < n; ++w) pool.emplace_back(work, w);
  work(0);
  for (auto& t : pool) t.join();
  for (const auto& e : errors) {
    if (e) std::rethrow_exception(e);
  }
}

}  // namespace kvfold
