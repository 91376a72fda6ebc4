#include "runtime_check/layer_prefetch.h"

#include <c10/core/InferenceMode.h>

#include <string>

#include "formats/error.h"

namespace kvfold {

LayerPrefetch::LayerPrefetch(const ReferenceModel::Impl& model, std::vector<std::int64_t> order)
    : model_(model), order_(std::move(order)) {}

LayerPrefetch::~LayerPrefetch() {
  if (next_.valid()) next_.wait();  // the reader holds references into this object's model
}

std::shared_ptr<const LlamaLayerWeights> LayerPrefetch::Take(std::int64_t l) {
  if (taken_ >= order_.size() || order_[taken_] != l) {
    Fail("runtime",
         "internal error: layer " + std::to_string(l) + " taken out of the sweep's order");
  }
  std::shared_ptr<const LlamaLayerWeights> weights =
      next_.valid() ? next_.get() : model_.LayerWeights(l);
  ++taken_;
  if (model_.streamed != nullptr && model_.prefetch_layers && taken_ < order_.size()) {
    const std::int64_t following = order_[taken_];
    next_ = std::async(std::launch::async, [this, following] {
      c10::InferenceMode inference;  // thread-local: the reader's tensors carry no autograd state
      return model_.LayerWeights(following);
    });
  }
  return weights;
}

}  // namespace kvfold
