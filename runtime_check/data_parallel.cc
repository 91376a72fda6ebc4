#include "runtime_check/data_parallel.h"

#include <ATen/Parallel.h>
#include <c10/core/InferenceMode.h>

#include <algorithm>

#include "formats/ranks.h"
#include "runtime_check/blas_threads.h"
#include "runtime_check/llama_forward.h"

namespace kvfold {

int MaxCpuThreads() { return 4 * CpuCores(); }

std::size_t DataParallelSlots(bool on_cpu) {
  if (!on_cpu) return 1;
  return static_cast<std::size_t>(std::max(1, at::get_num_threads()));
}

std::size_t WindowsPerBatch(std::size_t windows, std::size_t window_tokens, bool on_cpu) {
  const std::size_t workers =
      RankCount() > 1 ? static_cast<std::size_t>(RankCount()) : DataParallelSlots(on_cpu);
  const std::size_t cap = std::max<std::size_t>(1, 2048 / std::max<std::size_t>(1, window_tokens));
  const std::size_t share = std::max<std::size_t>(1, windows / workers);
  return std::min(cap, share);
}

bool OnCpu(const ReferenceModel& model) { return model.impl().device.is_cpu(); }

std::size_t DataParallelSlots(const ReferenceModel& model) {
  return DataParallelSlots(OnCpu(model));
}

void RunDataParallel(const ReferenceModel& model, std::size_t count,
                     const std::function<void(std::size_t, std::size_t)>& run,
                     const std::function<void(std::size_t)>& after_round) {
  RunDataParallel(DataParallelSlots(model), count, run, after_round);
}

void RunDataParallel(std::size_t slots, std::size_t count,
                     const std::function<void(std::size_t, std::size_t)>& run,
                     const std::function<void(std::size_t)>& after_round) {
  // Too few items to give every slot one: each runs alone with all threads (BLAS included).
  const bool one_by_one = slots == 1 || count < slots;
  for (std::size_t round = 0; round < count; round += slots) {
    const std::size_t end = std::min(count, round + slots);
    if (one_by_one) {
      for (std::size_t i = round; i < end; ++i) run(i, i % slots);
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
