// LibTorch internals of the reference runtime: the weights on the device and the batched
// forward pass. Include only from runtime_check sources that already pay for ATen.
#pragma once

#include <ATen/ATen.h>

#include <functional>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "calib/layer_observer.h"
#include "formats/checkpoint.h"
#include "runtime_check/hidden_state_store.h"
#include "runtime_check/kv_cache_policy.h"
#include "runtime_check/reference_model.h"

namespace kvfold {

struct LlamaLayerWeights {
  at::Tensor attn_norm;
  at::Tensor w_qkv,
      b_qkv;  // q, k and v stacked (one GEMM); q only where the layer reads another's K/V
  at::Tensor w_o, b_o;
  // Reconstruct-mode keys (config.key_projection_heads > 0), applied after RoPE:
  at::Tensor k_cache_proj;    // [KV, d, t d]: cached key head g = Psi_g (stacked rotated keys)
  at::Tensor q_cache_proj;    // [H, d, d]: query head h -> Psi_j h
  at::Tensor q_norm, k_norm;  // qwen3 (config.qk_norm): per-head RMSNorm weights [d], before RoPE
  at::Tensor attn_out_norm;   // config.sandwich_norms (Gemma): the attention output's norm
  at::Tensor mlp_norm;
  at::Tensor mlp_out_norm;          // config.sandwich_norms: the MLP output's norm
  at::Tensor w_gate_up, b_gate_up;  // gate and up stacked
  at::Tensor w_down, b_down;
};

// Weight buffers a sweep is done with, reused for the next layer's tensors of the same shape:
// layers are alike, and memory already faulted in costs no page faults and no zeroing by the
// kernel (issue 27: most of a streamed sweep's system time). CPU only; a tensor anything else
// still refers to is not kept.
class WeightSpares {
 public:
  void Add(const at::Tensor& t);
  void Add(const LlamaLayerWeights& w);  // every tensor of a layer
  // A spare of exactly `shape` (removed from the spares), else a new float32 CPU tensor.
  at::Tensor Take(const std::vector<std::int64_t>& shape);
  void Clear() { spares_.clear(); }
  std::size_t size() const { return spares_.size(); }
  // Frees the spares no Take wanted since the last Age (a layer boundary: a spare waits one
  // layer for a tensor of its shape, then goes).
  void Age();

 private:
  struct Spare {
    at::Tensor buffer;
    bool aged = false;
  };
  std::vector<Spare> spares_;
};

// Layer l's weights read from the checkpoint as float32 onto `device`; the source pages are
// released as each tensor is converted. With `spares` (CPU), buffers come from there first.
LlamaLayerWeights LoadLayerWeights(const Checkpoint& ck, std::int64_t l, const at::Device& device,
                                   WeightSpares* spares = nullptr);
// One layer's weights as read from a LayerWeightSource with generations, stacked as
// LlamaLayerWeights holds them, with the generations of the tensors each was read from.
struct LayerWeightCache {
  struct Entry {
    std::vector<std::uint64_t> generations;
    at::Tensor value;
  };
  std::int64_t layer = -1;
  std::map<std::string, Entry> entries;  // by the names read, joined
  // Buffers for the next reads: a stale copy's (a pass rewrote the tensor) and, at Retire, every
  // entry's (the layer is done). Retire also ages the spares and leaves the cache for no layer;
  // a cache without entries is retired already.
  WeightSpares spares;
  void Retire();
};

// The same from a converter's draft, shaped as `config` (the layer's own head counts) says.
// With a cache (and a source that tells generations), tensors unchanged since the cache read
// them for this layer are not read again; a cache of another layer is emptied first.
LlamaLayerWeights LoadLayerWeights(const LayerWeightSource& source, const ModelConfig& config,
                                   std::int64_t l, const at::Device& device,
                                   LayerWeightCache* cache = nullptr);

// How a sweep runs: who watches, which cache policy applies, and who hears of progress.
struct SweepOptions {
  // Empty, or one observer per data-parallel slot: batch b is watched by observers[b % size].
  std::vector<LayerObserver*> observers;
  const KvCachePolicy* cache = nullptr;
  // Per batch: its first sequence in the run (cache policy seeds; tells batches apart).
  // Empty: batch b starts at sequence b.
  std::vector<std::int64_t> first_sequences;
  std::function<void(std::int64_t layers_done)> after_layer;
};

struct ReferenceModel::Impl {
  ModelConfig config;
  at::Device device{at::kCPU};
  bool use_cpu_kernels = false;  // fused RoPE/attention kernels (CPU with AVX2+FMA only)
  at::Tensor final_norm;         // [D] (the architecture's norm offset included)
  float embed_scale = 1.0f;      // config.scale_embeddings: sqrt(D) in the embedding's dtype
  // Resident models only; a streaming model reads them from `streamed` when needed.
  at::Tensor embed;    // [V, D]
  at::Tensor lm_head;  // [V, D] (the embedding when tied)
  std::vector<LlamaLayerWeights> layers;
  // Streaming (RuntimeOptions::stream_layers): the checkpoint (which must outlive the model)
  // that a sweep reads each layer from when it reaches it, releasing it before the next.
  const Checkpoint* streamed = nullptr;
  bool prefetch_layers = true;  // RuntimeOptions::prefetch_layers
  // Bytes of hidden states a sweep keeps resident (RuntimeOptions::hidden_state_budget_bytes).
  std::uint64_t hidden_state_budget_bytes = UINT64_MAX;

  // Layer l's weights: the resident ones, or read now from `streamed` (into `spares` first).
  std::shared_ptr<const LlamaLayerWeights> LayerWeights(std::int64_t l,
                                                        WeightSpares* spares = nullptr) const;
  at::Tensor Embed(const at::Tensor& tokens) const;  // int64 [B, T] -> [B T, D]
  at::Tensor Scaled(const at::Tensor& embedded) const {
    return embed_scale != 1.0f ? embedded * embed_scale : embedded;
  }
  at::Tensor LmHead() const;  // [V, D]
  // Rows [begin, begin + count) of the LM head, float32 on `device`: a streamed model reads only
  // those rows from the checkpoint (runtime_check/vocab_blocks.h).
  at::Tensor LmHeadRows(std::int64_t begin, std::int64_t count) const;

  // The residual streams [B T, D] of many batches of int64 tokens [B, T], run layer by layer:
  // each layer is fetched once and applied to every batch (data-parallel on CPU) before the
  // next, so only the batches' hidden states live across layers. Results do not depend on
  // whether the model is resident or streamed, nor on how many batches were spilled.
  HiddenStateStore SweepHiddenStates(const std::vector<at::Tensor>& batches,
                                     const SweepOptions& options) const;

  // Logits [B, T, V] for int64 tokens [B, T] on `device`. With a cache policy, each layer's
  // queries read only the cached keys the policy leaves visible; batch row b is sequence
  // first_sequence + b of the evaluation (for the policy's seeds).
  // Models whose layers read a higher layer's K/V (LCKV) run token by token (exact) unless
  // lckv_iterations > 0 asks for the paper's parallel encoding; token_by_token forces the
  // sequential path for any model (a cross-check of the batched one).
  at::Tensor Forward(const at::Tensor& tokens, LayerObserver* observer,
                     const KvCachePolicy* cache = nullptr, std::int64_t first_sequence = 0) const;
  // The batched pass through every layer without the final norm and LM head: the residual
  // stream [B * T, D]. Calibration observes layers through it and never computes the
  // [tokens x vocab] logits it would discard.
  at::Tensor HiddenStates(const at::Tensor& tokens, LayerObserver* observer,
                          const KvCachePolicy* cache = nullptr,
                          std::int64_t first_sequence = 0) const;
  int lckv_iterations = 0;
  bool token_by_token = false;
  // LCKV layouts without parallel encoding, or token_by_token: Forward decodes one token at a
  // time and HiddenStates cannot run.
  bool DecodesTokenByToken() const {
    return token_by_token || (config.AttendsAbove() && lckv_iterations == 0);
  }
};

// What a Stepper keeps between layers: the batches and their hidden states.
struct ReferenceModel::Stepper::State {
  ReferenceModel::Impl model;      // the device and kernels of the model; config set per layer
  std::vector<at::Tensor> tokens;  // int64 [B, T] per batch
  std::vector<std::int64_t> first_sequences;
  HiddenStateStore hidden{UINT64_MAX};  // [B T, D] per batch
  LayerWeightCache weights;             // the layer being run, until it is advanced past
  // Layers that share K/V (mlkv): per source layer the stream has advanced past, until no later
  // layer reads it, each batch's rotated K/V [B T, 2 KV d], under a budget of its own equal to
  // the hidden states' (one --hidden-memory per source layer kept).
  std::map<std::int64_t, HiddenStateStore> shared_kv;
  std::set<std::int64_t> kept_kv;  // KeepKv: kept whether or not a later layer reads them
};

// Building blocks shared by the batched forward and token-by-token decoding.
at::Tensor RmsNorm(const at::Tensor& x, const at::Tensor& weight, double eps);
// cos/sin of pos * inv_freq[j] for pos < T, j < d/2, as [T, d/2] on `device`, with the config's
// rope_theta and rope_scaling (formats/rope.h).
std::pair<at::Tensor, at::Tensor> RopeTables(std::int64_t T, const ModelConfig& config,
                                             const at::Device& device);
// Qwen3's per-head RMSNorm of queries and keys, in place on the fused projection qkv [N, ...]:
// the H query heads from column 0 and `key_heads` key heads after them (0 = none).
void NormalizeQueryKeyHeads(at::Tensor& qkv, const LlamaLayerWeights& w, const ModelConfig& config,
                            std::int64_t key_heads);
// The layer's gated MLP (SwiGLU, or Gemma's GeGLU) on its residual stream x [N, D], its input
// norm included (and its output norm, config.sandwich_norms): the amount the layer adds to x.
at::Tensor MlpOutput(const LlamaLayerWeights& w, const at::Tensor& x, const ModelConfig& config);
// The attention's contribution to the residual: o_proj of the context [N, H d] (then Gemma's
// output norm).
at::Tensor AttentionOutput(const LlamaLayerWeights& w, const at::Tensor& ctx,
                           const ModelConfig& config);
// cap tanh(x / cap) (Gemma 2's soft-capping of scores and logits); x itself when cap is 0.
at::Tensor SoftCap(const at::Tensor& x, double cap);
// The RoPE tables of layer `layer` (Gemma 3's sliding layers rotate with their own base).
std::pair<at::Tensor, at::Tensor> LayerRopeTables(std::int64_t T, const ModelConfig& config,
                                                  std::int64_t layer, const at::Device& device);
// rotate_half RoPE on token-major [B, T, n, d] with cos/sin [T, d/2].
at::Tensor ApplyRope(const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin);
// Reconstruct mode (gqa-svd<rope=reconstruct>): rotated queries [..., H, d] and keys
// [..., KVs, d] projected onto the cached key heads with q_cache_proj [H, d, d] and k_cache_proj
// [KV, d, t d] (t = KVs / KV): q'_h = Psi_h q_h [..., H, d], k'_g = Psi_g [k_{g t}; ...;
// k_{g t + t - 1}] [..., KV, d].
std::pair<at::Tensor, at::Tensor> ReconstructQueryKey(const at::Tensor& q_rope,
                                                      const at::Tensor& k_rope,
                                                      const at::Tensor& q_cache_proj,
                                                      const at::Tensor& k_cache_proj);
// Additive mask [T, T]: 0 where key j is visible to query i (j <= i, inside the sliding window
// when there is one), -inf elsewhere.
at::Tensor CausalMask(std::int64_t T, std::int64_t sliding_window, const at::Device& device);
// Additive mask [T, T] for a layer that reads a higher layer's K/V (LCKV): query i sees keys
// j < i only. Row 0 sees nothing; it is left open at (0, 0) so softmax stays finite, and the
// caller zeroes that row's output (whyNLP/LCKV: the first token gets zero attention output).
at::Tensor BelowDiagonalMask(std::int64_t T, const at::Device& device);

// Logits [B, T, V]: each token run through every layer before the next token, K/V appended to
// per-layer caches, exactly as a decoder generates. For LCKV layers reading a higher layer, a
// token sees that layer's K/V of earlier tokens only (whyNLP/LCKV's sequential semantics). The
// layers run through the same layer body as the batched forward, one token per call.
at::Tensor DecodeTokenByToken(const ReferenceModel::Impl& model, const at::Tensor& tokens);

at::Device ParseDevice(const std::string& spec);

}  // namespace kvfold
