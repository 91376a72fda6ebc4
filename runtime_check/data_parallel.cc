#include "runtime_check/data_parallel.h"

#include <ATen/Parallel.h>
#include <c10/core/InferenceMode.h>

#include <algorithm>
#include <thread>

#include "runtime_check/blas_threads.h"
#include "runtime_check/llama_forward.h"

namespace kvfold {

int MaxCpuThreads() { return 4 * static_cast<int>(std::max(1u, std::thread::hardware_concurrency())); }

std::size_t DataParallelSlots(const ReferenceModel& model) {
  if (!model.impl().device.is_cpu()) return 1;
  return static_cast<std::size_t>(std::max(1, at::get_num_threads()));
}

void RunDataParallel(const ReferenceModel& model, std::size_t count,
                     const std::function<void(std::size_t, std::size_t)>& run,
                     const std::function<void(std::size_t)>& after_round) {
  const std::size_t slots = DataParallelSlots(model);
  for (std::size_t round = 0; round < count; round += slots) {
    const std::size_t end = std::min(count, round + slots);
    if (slots == 1) {
      run(round, 0);
    } else {
      ScopedSingleThreadBlas one_blas_thread;
      at::parallel_for(static_cast<std::int64_t>(round), static_cast<std::int64_t>(end), 1,
                       [&](std::int64_t b, std::int64_t e) {
                         c10::InferenceMode guard;  // thread-local: each worker needs its own
                         for (std::int64_t i = b; i < e; ++i) {
                           run(static_cast<std::size_t>(i), static_cast<std::size_t>(i) % slots);
                         }
                       });
    }
    after_round(end);
  }
}

}  // namespace kvfold
