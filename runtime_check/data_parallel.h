// Data parallelism over independent batches for the reference runtime: on CPU each round runs
// one batch per LibTorch thread, each single-threaded inside (OpenBLAS pinned to one thread), so
// libgomp's and OpenBLAS's pools never spin against each other; on CUDA batches run in order.
#pragma once

#include <cstddef>
#include <functional>

#include "formats/ranks.h"  // CpuCores
#include "runtime_check/reference_model.h"

namespace kvfold {

// The most CPU threads kvfold accepts (--threads): 4 x this machine's cores; more only spawns
// idle threads.
int MaxCpuThreads();

// Number of concurrent slots RunDataParallel uses for `model` (threads on CPU, 1 on CUDA).
std::size_t DataParallelSlots(const ReferenceModel& model);
std::size_t DataParallelSlots(bool on_cpu);
bool OnCpu(const ReferenceModel& model);

// Windows per batch when `windows` windows of `window_tokens` tokens are cut into batches: about
// 2048 tokens (measured best on mini-mha, docs/results.md), but never more than an even share
// among the workers, so that a short run gives every worker a batch and runs data parallel
// instead of one batch with LibTorch's and OpenBLAS's pools sharing the cores. The workers are
// the ranks when there are several (every rank must cut alike, and ranks may have other thread
// counts), else this process's data-parallel slots.
std::size_t WindowsPerBatch(std::size_t windows, std::size_t window_tokens, bool on_cpu);

// Calls run(index, slot) for index in [0, count); slot = index % DataParallelSlots(model), so a
// slot's batches run one at a time and in index order. after_round(done) follows each round.
// Fewer items than slots run one after another, each with every thread inside.
void RunDataParallel(const ReferenceModel& model, std::size_t count,
                     const std::function<void(std::size_t index, std::size_t slot)>& run,
                     const std::function<void(std::size_t done)>& after_round);
void RunDataParallel(std::size_t slots, std::size_t count,
                     const std::function<void(std::size_t index, std::size_t slot)>& run,
                     const std::function<void(std::size_t done)>& after_round);

}  // namespace kvfold
