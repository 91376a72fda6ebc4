// HiddenStateStore: the residual stream of every batch of a layer sweep ([rows, D] float32 each),
// the only thing a layer-sequential run keeps across layers. Batches stay in memory up to a
// budget; the rest live in an unlinked temporary file (in $TMPDIR, else /tmp), read before and
// written back after each layer: a 65536-token calibration of a 70B model (hidden 8192) holds
// 2 GiB of hidden states, which need not all be resident.
#pragma once

#include <ATen/ATen.h>

#include <cstdint>
#include <vector>

#include "formats/spill_file.h"

namespace kvfold {

class HiddenStateStore {
 public:
  // Batches stay resident, in the order added, while they fit in `budget_bytes` (0: every batch
  // is spilled; UINT64_MAX: none).
  explicit HiddenStateStore(std::uint64_t budget_bytes);

  void Add(const at::Tensor& x);  // a new batch, [rows, D] float32
  // A new batch of `shape`, empty until Put fills it (Put may then run on any thread, each
  // batch on one): resident if it fits, else its room in the file.
  void Reserve(const std::vector<std::int64_t>& shape);
  // Batch b on `device`: a resident batch is the stored tensor itself (changes made in place are
  // kept); a spilled one is read from the file, and Put writes it back.
  at::Tensor Get(std::size_t b, const at::Device& device) const;
  void Put(std::size_t b, const at::Tensor& x);
  std::uint64_t budget_bytes() const { return budget_.limit(); }
  // A copy of every batch (resident or spilled alike) under the same budget.
  HiddenStateStore Clone(const at::Device& device) const;

 private:
  struct Batch {
    at::Tensor resident;  // undefined when spilled, or reserved and not yet put
    std::vector<std::int64_t> shape;
    bool spilled = false;
    std::uint64_t offset = 0;  // in the spill file
  };
  MemoryBudget budget_;
  std::vector<Batch> batches_;
  SpillFile spill_{"hidden-state spill file"};
};

}  // namespace kvfold
