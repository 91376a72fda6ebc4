// LayerPrefetch: a streamed model reads layer order[i + 1] from the checkpoint on another thread
// while layer order[i] runs, so reading and converting a layer (and, with --device cuda, copying
// it to the device) overlaps the compute instead of stalling it. Two layers are in memory at a
// time instead of one. Resident models take their layers as they are.
#pragma once

#include <cstdint>
#include <future>
#include <memory>
#include <vector>

#include "runtime_check/llama_forward.h"

namespace kvfold {

class LayerPrefetch {
 public:
  // `order`: every layer the sweep will take, in the order it takes them.
  LayerPrefetch(const ReferenceModel::Impl& model, std::vector<std::int64_t> order);
  ~LayerPrefetch();  // waits for a read in flight
  // Layer `l`, which must be the next one in `order`; starts reading the one after.
  std::shared_ptr<const LlamaLayerWeights> Take(std::int64_t l);

 private:
  const ReferenceModel::Impl& model_;
  std::vector<std::int64_t> order_;
  std::size_t taken_ = 0;
  std::future<std::shared_ptr<const LlamaLayerWeights>> next_;
};

}  // namespace kvfold
