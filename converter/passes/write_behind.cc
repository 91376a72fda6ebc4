#include "converter/passes/write_behind.h"

#include <utility>

namespace kvfold {

WriteBehind::~WriteBehind() {
  if (thread_.joinable()) thread_.join();
}

void WriteBehind::Start(std::function<void()> job) {
  Wait();
  thread_ = std::thread([this, job = std::move(job)] {
    try {
      job();
    } catch (...) {
      error_ = std::current_exception();  // read by Wait, after the join
    }
  });
}

void WriteBehind::Wait() {
  if (thread_.joinable()) thread_.join();
  if (!error_) return;
  std::exception_ptr error = std::exchange(error_, nullptr);
  std::rethrow_exception(error);
}

}  // namespace kvfold
