// Healing one folded layer's attention (the heal pass, docs/heal.md): Adam on W_Q, W_K, W_V and
// W_O (q/k/v biases included; through Qwen3's per-head q/k norms and reconstruct-mode key
// projections) so that the layer's attention output on the captured inputs matches the source
// layer's (or, target=logits, so that the model's next-token distributions through the source
// layers above match the source's), stopped early on held-out windows. LibTorch's autograd does
// the gradients; nothing here is in ATen's types, so the layer loop calls it without ATen.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "calib/layer_heal.h"
#include "formats/model_config.h"
#include "runtime_check/reference_model.h"

namespace kvfold {

// One layer's attention projections in float32, row-major.
struct HealWeights {
  std::int64_t heads = 0, kv_heads = 0, head_dim = 0;
  std::int64_t in_cols = 0;       // hidden size, + 1 when q/k/v have biases (last column)
  std::vector<float> wq, wk, wv;  // [heads d, in_cols], [kv_heads d, in_cols] x 2
  std::vector<float> wo;          // [hidden, heads d]
  // Per-head RMSNorm weights of queries and keys before RoPE (Qwen3), as they multiply, [d]
  // each; empty without them. Applied, not trained.
  std::vector<float> q_norm, k_norm;
  // Reconstruct-mode keys (gqa-svd<rope=reconstruct>): wk keeps the source's key heads (its rows
  // / head_dim), and the runtime projects rotated queries and keys onto the kv_heads cached ones
  // with these (ReconstructQueryKey), [heads, d, d] and [kv_heads, d, key heads / kv_heads d].
  // Applied, not trained; empty otherwise.
  std::vector<float> q_cache_proj, k_cache_proj;
  // A layer that reads another layer's K/V (mlkv, lckv): wk and wv are that layer's, applied to
  // its captured attention inputs (the same windows in the same order), and not trained; null
  // otherwise.
  const HealWindows* kv_source = nullptr;
  // kv_source is a layer above this one (lckv): each token reads its K/V of earlier tokens only
  // (the diagonal masked), and the first token's attention output is zero, as the runtime
  // decodes it.
  bool kv_above = false;
  // wk and wv are applied, not trained: layers below this one read its K/V and were healed
  // against them (lckv's target layer).
  bool kv_fixed = false;
  std::int64_t key_heads() const {
    return static_cast<std::int64_t>(wk.size()) / (head_dim * in_cols);
  }
};

// target=logits: the source model (streamed from its checkpoint: the layers above the healed
// one, its final norm and LM head) and its residual stream after the last layer on every
// captured window (SourceFinalStates).
struct HealLogitsTarget {
  const ReferenceModel* source = nullptr;
  const HealWindows* final_states = nullptr;
};

// The source model's residual stream after its last layer on `batches` (heal's windows, every
// one on every rank), as HealWindows whose `input` is [T, D] per window, within `budget`.
HealWindows SourceFinalStates(const ReferenceModel& source,
                              const std::vector<ReferenceModel::ObservedBatch>& batches,
                              const std::shared_ptr<MemoryBudget>& budget);

// Trains `w` in place on `data` against the target context x `source_wo`^T ([hidden, HD]), plus
// data.residual when there is one. Windows are read from `data` as each step needs them (they
// may be spilled); no copy of them is made.
// `layer` (the config of layer `layer_index`) gives the RoPE tables, the sliding window, the
// score scale and soft-cap. q/k norm weights in `w` are the ones the runtime multiplies by (with
// Gemma's + 1 already added). Windows HeldOutWindow names
// (among data.count()) only measure. The weights at the check with the lowest held-out error are
// kept when that error is at least 0.1% below the fold's; else `w` is left exactly as it was.
// With `logits` (target=logits) the error is instead the KL of the source's next-token
// distributions to those of the model with this attention and the source layers above it, per
// token, and data.stream holds the residual stream entering the layer.
// Deterministic for a given device and thread count. Throws Error on an unusable layer.
HealOutcome HealAttention(const ModelConfig& layer, std::int64_t layer_index,
                          const HealWindows& data, const std::vector<float>& source_wo,
                          HealWeights& w, const HealSettings& settings, const std::string& device,
                          const HealLogitsTarget* logits = nullptr);

}  // namespace kvfold
