// heal<target=logits> (docs/heal.md): the frozen model above the attention being trained, through
// which the next-token distribution of the converted model is compared with the source's. ATen
// internals of runtime_check/attention_heal.cc.
#pragma once

#include <ATen/ATen.h>

#include <cstdint>
#include <utility>
#include <vector>

#include "runtime_check/llama_forward.h"

namespace kvfold {

// Softmax attention of rotated queries q [W, T, H, d] over keys and values k, v [W, T, KV, d]
// (H a multiple of KV) with an additive mask [T, T]: the context [W, T, H d]. Differentiable.
at::Tensor DenseAttention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                          const at::Tensor& mask, double scale, double soft_cap);

// The source model from layer `layer`'s attention output on: that layer's MLP, every source layer
// above it, the final norm and the LM head, frozen, held in float32 on `device` (small models
// only: heal's Unsupported refuses the rest).
class ModelAbove {
 public:
  ModelAbove(const ReferenceModel::Impl& source, std::int64_t layer, std::int64_t T,
             const at::Device& device);
  // Sum over the tokens of KL(source || model), where the model's residual stream is `stream`
  // [W, T, D] (entering the layer) plus the attention output `attention` [W, T, D] (before
  // Gemma's output norm), and the source's is `source_final` [W, T, D] after its last layer.
  at::Tensor KlSum(const at::Tensor& attention, const at::Tensor& stream,
                   const at::Tensor& source_final) const;

 private:
  at::Tensor Layer(std::size_t i, const at::Tensor& x) const;  // layers_[i] on x [W, T, D]
  at::Tensor LogProbs(const at::Tensor& x) const;              // [W, T, V]
  ModelConfig c_;
  std::int64_t layer_;
  std::vector<LlamaLayerWeights> layers_;  // layer_, layer_ + 1, ...
  std::vector<std::pair<at::Tensor, at::Tensor>> rope_;
  std::vector<at::Tensor> masks_;
  at::Tensor final_norm_, lm_head_;
};

}  // namespace kvfold
