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
  std::shared_ptr<const LlamaLayerWeights> weights;
  if (next_.valid()) {
    weights = next_.get();
  } else {
    RecycleLast();
    weights = model_.LayerWeights(l, &spares_);
  }
  ++taken_;
  RecycleLast();
  last_ = weights;
  if (model_.streamed != nullptr && model_.prefetch_layers && taken_ < order_.size()) {
    const std::int64_t following = order_[taken_];
    next_ = std::async(std::launch::async, [this, following] {
      c10::InferenceMode inference;  // thread-local: the reader's tensors carry no autograd state
      return model_.LayerWeights(following, &spares_);
    });
  }
  return weights;
}

void LayerPrefetch::RecycleLast() {
  spares_.Clear();  // what the last read did not take
  // A streamed layer the sweep let go (a resident one is the model's own, never a spare).
  if (model_.streamed != nullptr && last_ != nullptr && last_.use_count() == 1) spares_.Add(*last_);
  last_.reset();
}

}  // namespace kvfold
