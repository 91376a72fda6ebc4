// WriteBehind: one job at a time on a thread of its own. ModelDraft::WriteLayer hands a layer's
// tensors to the output this way, so that writing layer l (the kernel copying its bytes into the
// page cache, a GGUF dtype conversion) runs while layer l + 1 is calibrated and folded.
#pragma once

#include <exception>
#include <functional>
#include <thread>

namespace kvfold {

class WriteBehind {
 public:
  WriteBehind() = default;
  WriteBehind(const WriteBehind&) = delete;
  WriteBehind& operator=(const WriteBehind&) = delete;
  // Waits for the running job; what it threw is dropped (its owner is being unwound already).
  ~WriteBehind();

  // Waits for the job before (rethrowing its error, in which case `job` does not run), then
  // starts `job`. At most one job runs or waits, so at most one layer's bytes are held for it.
  void Start(std::function<void()> job);
  // Returns once no job runs; rethrows what the last one threw (once).
  void Wait();

 private:
  std::thread thread_;
  std::exception_ptr error_;
};

}  // namespace kvfold
