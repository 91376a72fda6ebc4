// LayerPrefetch: a streamed model reads layer order[i + 1] from the checkpoint on another thread
// while layer order[i] runs, so reading and converting a layer (and, with --device cuda, copying
// it to the device) overlaps the compute instead of stalling it. Two layers are in memory at a
// time instead of one; the buffers of the layer before them are read into, not fresh memory.
// Resident models take their layers as they are.
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
  void RecycleLast();  // last_'s buffers to spares_, when the sweep is done with it
  const ReferenceModel::Impl& model_;
  std::vector<std::int64_t> order_;
  std::size_t taken_ = 0;
  // The layer handed out last; once the sweep is done with it, its buffers become `spares_`,
  // which the next read fills (one reader at a time: a read finishes before the next Take).
  std::shared_ptr<const LlamaLayerWeights> last_;
  WeightSpares spares_;
  std::future<std::shared_ptr<const LlamaLayerWeights>> next_;
};

}  // namespace kvfold
