// Token-by-token decoding: the sequential semantics every cache layout must match, and the only
// exact way to run LCKV, whose lower layers read the top layer's K/V of earlier tokens.
#include <ATen/ATen.h>
#include <c10/core/InferenceMode.h>

#include <algorithm>
#include <map>

#include "formats/error.h"
#include "runtime_check/llama_forward.h"

namespace kvfold {

at::Tensor DecodeTokenByToken(const ReferenceModel::Impl& m, const at::Tensor& tokens) {
  c10::InferenceMode inference;
  const ModelConfig& c = m.config;
  if (c.key_projection_heads > 0)
    Fail("runtime", "token-by-token decoding of reconstruct-mode keys is not implemented");
  const std::int64_t B = tokens.size(0), T = tokens.size(1), L = c.num_hidden_layers;
  const std::int64_t H = c.num_attention_heads, d = c.head_dim;
  const double scale = c.AttentionScale();
  // Global and local (Gemma 3's sliding layers) RoPE tables, each made once.
  std::map<bool, std::pair<at::Tensor, at::Tensor>> rope;
  for (std::int64_t l = 0; l < L; ++l) {
    if (!rope.count(c.LocalRope(l))) rope[c.LocalRope(l)] = LayerRopeTables(T, c, l, m.device);
  }
  const at::TensorOptions f32 = at::TensorOptions().dtype(at::kFloat).device(m.device);

  // The KV cache: [B, KV, T, d] per layer that computes K/V.
  std::vector<at::Tensor> keys(static_cast<std::size_t>(L)), values(static_cast<std::size_t>(L));
  for (std::int64_t l = 0; l < L; ++l) {
    if (!c.ComputesKv(l)) continue;
    keys[static_cast<std::size_t>(l)] = at::zeros({B, c.KvHeads(l), T, d}, f32);
    values[static_cast<std::size_t>(l)] = at::zeros({B, c.KvHeads(l), T, d}, f32);
  }
  at::Tensor logits = at::empty({B, T, c.vocab_size}, f32);
  for (std::int64_t t = 0; t < T; ++t) {
    at::Tensor x = m.Embed(tokens.select(1, t));  // [B, D]
    for (std::int64_t l = 0; l < L; ++l) {
      const auto& [cos, sin] = rope.at(c.LocalRope(l));
      const at::Tensor c_t = cos.narrow(0, t, 1), s_t = sin.narrow(0, t, 1);
      const LlamaLayerWeights& w = m.layers[static_cast<std::size_t>(l)];
      const std::int64_t source = c.KvSourceOf(l);
      const std::int64_t KV = c.KvHeads(source), group = H / KV;
      at::Tensor qkv =
          at::linear(RmsNorm(x, w.attn_norm, c.rms_norm_eps), w.w_qkv, w.b_qkv).contiguous();
      if (c.qk_norm) NormalizeQueryKeyHeads(qkv, w, c, c.ComputesKv(l) ? KV : 0);
      const at::Tensor q = ApplyRope(qkv.narrow(1, 0, H * d).view({B, 1, H, d}), c_t, s_t);
      if (c.ComputesKv(l)) {
        const at::Tensor k = ApplyRope(qkv.narrow(1, H * d, KV * d).view({B, 1, KV, d}), c_t, s_t);
        keys[static_cast<std::size_t>(l)].select(2, t).copy_(k.view({B, KV, d}));
        values[static_cast<std::size_t>(l)].select(2, t).copy_(
            qkv.narrow(1, (H + KV) * d, KV * d).view({B, KV, d}));
      }
      // Keys [first, end): a source above this layer has not seen token t yet.
      const std::int64_t end = source > l ? t : t + 1;
      const std::int64_t window = c.WindowOf(l);
      const std::int64_t first = window > 0 ? std::max<std::int64_t>(0, t + 1 - window) : 0;
      at::Tensor ctx;
      if (end <= first) {
        ctx = at::zeros({B, H * d}, f32);
      } else {
        const at::Tensor k_seen =
            keys[static_cast<std::size_t>(source)].narrow(2, first, end - first);
        const at::Tensor v_seen =
            values[static_cast<std::size_t>(source)].narrow(2, first, end - first);
        const at::Tensor qg = (q.view({B, KV, group, d}) * scale);
        const at::Tensor probs =  // [B, KV, group, n]
            at::softmax(SoftCap(at::matmul(qg, k_seen.transpose(-1, -2)), c.attn_logit_softcap),
                        -1);
        ctx = at::matmul(probs, v_seen).reshape({B, H * d});
      }
      x = x + AttentionOutput(w, ctx, c);
      x = x + MlpOutput(w, x, c);
    }
    logits.select(1, t).copy_(SoftCap(
        at::linear(RmsNorm(x, m.final_norm, c.rms_norm_eps), m.lm_head), c.final_logit_softcap));
  }
  return logits;
}

}  // namespace kvfold
