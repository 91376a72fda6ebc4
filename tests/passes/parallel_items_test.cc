// ParallelItems (converter/passes/parallel_items.h): every item once, on the threads asked for,
// and an item's exception back in the caller.
#include "converter/passes/parallel_items.h"

#include <atomic>
#include <catch2/catch.hpp>
#include <mutex>
#include <set>
#include <stdexcept>
#include <thread>
#include <vector>

using namespace kvfold;

TEST_CASE("ParallelItems runs every item exactly once", "[parallel]") {
  for (int threads : {1, 2, 3, 8}) {
    for (std::int64_t count : {0, 1, 2, 7}) {
      std::vector<std::atomic<int>> runs(static_cast<std::size_t>(count));
      ParallelItems(count, threads, [&](std::int64_t i) { ++runs[static_cast<std::size_t>(i)]; });
      INFO(threads << " threads, " << count << " items");
      for (const auto& r : runs) CHECK(r == 1);
    }
  }
}

TEST_CASE("ParallelItems uses min(threads, items) threads, this one included", "[parallel]") {
  std::mutex m;
  std::set<std::thread::id> seen;
  ParallelItems(6, 3, [&](std::int64_t) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));  // no thread takes every item
    const std::lock_guard<std::mutex> lock(m);
    seen.insert(std::this_thread::get_id());
  });
  CHECK(seen.size() == 3);
  CHECK(seen.count(std::this_thread::get_id()) == 1);
  seen.clear();
  ParallelItems(4, 1, [&](std::int64_t) { seen.insert(std::this_thread::get_id()); });
  CHECK(seen == std::set<std::thread::id>{std::this_thread::get_id()});
}

TEST_CASE("ParallelItems rethrows an item's error after every thread stopped", "[parallel]") {
  std::atomic<int> finished{0};
  auto run = [&] {
    ParallelItems(8, 2, [&](std::int64_t i) {
      if (i == 3) throw std::runtime_error("item 3 failed");
      ++finished;
    });
  };
  CHECK_THROWS_WITH(run(), "item 3 failed");
  // Thread 1 (items 1, 3, 5, 7) stopped at item 3; thread 0 ran its four.
  CHECK(finished == 5);
}
