#include "runtime_check/heal_logits.h"

#include <ATen/core/grad_mode.h>

namespace kvfold {
namespace {

// A copy autograd may save for the backward pass (weights a sweep loaded are inference tensors).
at::Tensor Frozen(const at::Tensor& t, const at::Device& device) {
  return t.defined() ? t.to(device).clone() : t;
}

LlamaLayerWeights Frozen(const LlamaLayerWeights& w, const at::Device& device) {
  LlamaLayerWeights f;
  at::Tensor LlamaLayerWeights::*const fields[] = {
      &LlamaLayerWeights::attn_norm,    &LlamaLayerWeights::w_qkv,
      &LlamaLayerWeights::b_qkv,        &LlamaLayerWeights::w_o,
      &LlamaLayerWeights::b_o,          &LlamaLayerWeights::k_cache_proj,
      &LlamaLayerWeights::q_cache_proj, &LlamaLayerWeights::q_norm,
      &LlamaLayerWeights::k_norm,       &LlamaLayerWeights::attn_out_norm,
      &LlamaLayerWeights::mlp_norm,     &LlamaLayerWeights::mlp_out_norm,
      &LlamaLayerWeights::w_gate_up,    &LlamaLayerWeights::b_gate_up,
      &LlamaLayerWeights::w_down,       &LlamaLayerWeights::b_down};
  static_assert(
      sizeof(LlamaLayerWeights) == sizeof(fields) / sizeof(fields[0]) * sizeof(at::Tensor),
      "a field of LlamaLayerWeights is missing here");
  for (at::Tensor LlamaLayerWeights::*field : fields) f.*field = Frozen(w.*field, device);
  return f;
}

}  // namespace

at::Tensor DenseAttention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                          const at::Tensor& mask, double scale, double soft_cap) {
  const std::int64_t W = q.size(0), T = q.size(1), H = q.size(2), d = q.size(3);
  const std::int64_t group = H / k.size(2);
  const at::Tensor qh = q.permute({0, 2, 1, 3});
  const at::Tensor kh = k.permute({0, 2, 1, 3}).repeat_interleave(group, 1);
  const at::Tensor vh = v.permute({0, 2, 1, 3}).repeat_interleave(group, 1);
  const at::Tensor scores = SoftCap(at::matmul(qh, kh.transpose(-1, -2)) * scale, soft_cap) + mask;
  return at::matmul(at::softmax(scores, -1), vh).permute({0, 2, 1, 3}).reshape({W, T, H * d});
}

ModelAbove::ModelAbove(const ReferenceModel::Impl& source, std::int64_t layer, std::int64_t T,
                       const at::Device& device)
    : c_(source.config), layer_(layer) {
  for (std::int64_t l = layer; l < c_.num_hidden_layers; ++l) {
    layers_.push_back(Frozen(*source.LayerWeights(l), device));
    rope_.push_back(LayerRopeTables(T, c_, l, device));
    masks_.push_back(CausalMask(T, c_.WindowOf(l), device));
  }
  final_norm_ = Frozen(source.final_norm, device);
  lm_head_ = Frozen(source.LmHead(), device);
}

at::Tensor ModelAbove::KlSum(const at::Tensor& attention, const at::Tensor& stream,
                             const at::Tensor& source_final) const {
  const LlamaLayerWeights& own = layers_.front();
  const double eps = c_.rms_norm_eps;
  at::Tensor x =
      stream + (c_.sandwich_norms ? RmsNorm(attention, own.attn_out_norm, eps) : attention);
  x = x + MlpOutput(own, x.view({-1, x.size(2)}), c_).view(x.sizes());
  for (std::size_t i = 1; i < layers_.size(); ++i) x = Layer(i, x);
  const at::Tensor log_p = LogProbs(x);
  at::Tensor log_s;
  {
    at::NoGradGuard no_grad;
    log_s = LogProbs(source_final);
  }
  return (log_s.exp() * (log_s - log_p)).sum();
}

at::Tensor ModelAbove::Layer(std::size_t i, const at::Tensor& x) const {
  const LlamaLayerWeights& w = layers_[i];
  const std::int64_t l = layer_ + static_cast<std::int64_t>(i);
  const std::int64_t W = x.size(0), T = x.size(1), D = x.size(2);
  const std::int64_t H = c_.num_attention_heads, KV = c_.KvHeads(l), d = c_.head_dim;
  const double eps = c_.rms_norm_eps;
  const at::Tensor qkv = at::linear(RmsNorm(x, w.attn_norm, eps), w.w_qkv, w.b_qkv);
  auto heads = [&](std::int64_t offset, std::int64_t n) {  // [W, T, n, d]
    return qkv.narrow(-1, offset * d, n * d).reshape({W, T, n, d});
  };
  at::Tensor q = heads(0, H), k = heads(H, KV);
  if (c_.qk_norm) {
    q = RmsNorm(q, w.q_norm, eps);
    k = RmsNorm(k, w.k_norm, eps);
  }
  const auto& [cos, sin] = rope_[i];
  const at::Tensor ctx =
      DenseAttention(ApplyRope(q, cos, sin), ApplyRope(k, cos, sin), heads(H + KV, KV), masks_[i],
                     c_.AttentionScale(), c_.attn_logit_softcap);
  const at::Tensor mid = x + AttentionOutput(w, ctx.view({W * T, H * d}), c_).view({W, T, D});
  return mid + MlpOutput(w, mid.view({W * T, D}), c_).view({W, T, D});
}

at::Tensor ModelAbove::LogProbs(const at::Tensor& x) const {
  const at::Tensor logits = at::linear(RmsNorm(x, final_norm_, c_.rms_norm_eps), lm_head_);
  return at::log_softmax(SoftCap(logits, c_.final_logit_softcap), -1);
}

}  // namespace kvfold
