// The reference forward pass of the Llama family, batched over equal-length sequences.
#include "runtime_check/llama_forward.h"

#include <ATen/Parallel.h>
#include <ATen/core/grad_mode.h>
#include <ATen/detail/CUDAHooksInterface.h>
#include <c10/core/InferenceMode.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <map>
#include <optional>
#include <tuple>

#include "formats/error.h"
#include "formats/ranks.h"
#include "runtime_check/attention_cpu.h"
#include "runtime_check/data_parallel.h"
#include "runtime_check/forward_flop.h"
#include "runtime_check/layer_prefetch.h"
#include "runtime_check/tensor_cache.h"

namespace kvfold {

at::Tensor RmsNorm(const at::Tensor& x, const at::Tensor& weight, double eps) {
  return x * at::rsqrt(x.pow(2).mean(-1, /*keepdim=*/true) + eps) * weight;
}

// Angles are formed in double: at position 255 a float32 angle would already be off by ~1e-5 rad.
// Pairs RoPE passes through (partial rotary) have frequency zero and no attention factor.
std::pair<at::Tensor, at::Tensor> RopeTables(std::int64_t T, const ModelConfig& config,
                                             const at::Device& device) {
  const std::int64_t half = config.head_dim / 2, rotated = config.RotaryDim() / 2;
  const std::vector<double> inv_freq = RopePairFrequencies(config, T);
  const double scale = RopeCosSinScale(config);
  at::Tensor cos = at::empty({T, half}, at::kFloat);
  at::Tensor sin = at::empty({T, half}, at::kFloat);
  float* c = cos.data_ptr<float>();
  float* s = sin.data_ptr<float>();
  for (std::int64_t j = 0; j < half; ++j) {
    const double f = inv_freq[static_cast<std::size_t>(j)], a = j < rotated ? scale : 1.0;
    for (std::int64_t p = 0; p < T; ++p) {
      c[p * half + j] = static_cast<float>(a * std::cos(static_cast<double>(p) * f));
      s[p * half + j] = static_cast<float>(a * std::sin(static_cast<double>(p) * f));
    }
  }
  return {cos.to(device), sin.to(device)};
}

void NormalizeQueryKeyHeads(at::Tensor& qkv, const LlamaLayerWeights& w, const ModelConfig& config,
                            std::int64_t key_heads) {
  const std::int64_t N = qkv.size(0), H = config.num_attention_heads, d = config.head_dim;
  at::Tensor q = qkv.narrow(1, 0, H * d).view({N, H, d});
  q.copy_(RmsNorm(q, w.q_norm, config.rms_norm_eps));
  if (key_heads == 0) return;
  at::Tensor k = qkv.narrow(1, H * d, key_heads * d).view({N, key_heads, d});
  k.copy_(RmsNorm(k, w.k_norm, config.rms_norm_eps));
}

// rotate_half RoPE on token-major [B, T, n, d]: pair j is (x_j, x_{j+d/2}), rotated by the
// angle of the token's position; cos/sin are [T, d/2].
at::Tensor ApplyRope(const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin) {
  const std::int64_t half = x.size(-1) / 2;
  const at::Tensor c = cos.unsqueeze(1), s = sin.unsqueeze(1);  // [T, 1, d/2]
  at::Tensor x1 = x.narrow(-1, 0, half);
  at::Tensor x2 = x.narrow(-1, half, half);
  return at::cat({x1 * c - x2 * s, x2 * c + x1 * s}, -1);
}

std::pair<at::Tensor, at::Tensor> ReconstructQueryKey(const at::Tensor& q_rope,
                                                      const at::Tensor& k_rope,
                                                      const at::Tensor& q_cache_proj,
                                                      const at::Tensor& k_cache_proj) {
  const std::int64_t KV = k_cache_proj.size(0), td = k_cache_proj.size(2);
  // One product per head over every token. A broadcast matmul made one 1 x d x d product per
  // token and head: micro-mha's reconstruct fold with heal<steps=100> on 16384 tokens took
  // 19.4-21.0 s that way, 9.3-12.0 s this way.
  // q'_h = Psi_h q_h
  const at::Tensor q = at::einsum("...hd,hed->...he", {q_rope, q_cache_proj});
  // k'_g = Psi_g [k_{g t}; ...]: [..., KV, t d] x [KV, d, t d]
  std::vector<std::int64_t> grouped = k_rope.sizes().vec();
  grouped.resize(grouped.size() - 2);
  grouped.insert(grouped.end(), {KV, td});
  const at::Tensor k = at::einsum("...gc,gec->...ge", {k_rope.reshape(grouped), k_cache_proj});
  return {q, k};
}

at::Tensor MlpOutput(const LlamaLayerWeights& w, const at::Tensor& x, const ModelConfig& config) {
  const std::int64_t I = config.intermediate_size;
  const at::Tensor gate_up =
      at::linear(RmsNorm(x, w.mlp_norm, config.rms_norm_eps), w.w_gate_up, w.b_gate_up);
  at::Tensor gate = gate_up.narrow(1, 0, I);
  const bool gelu = config.mlp_activation == MlpActivation::kGeluTanh;
  if (at::GradMode::is_enabled()) {  // heal<target=logits> differentiates through it
    gate = (gelu ? at::gelu(gate, "tanh") : at::silu(gate)) * gate_up.narrow(1, I, I);
  } else {
    // The activation and the product overwrite the gate half in place: two [N, I] buffers
    // fewer, each faulted in anew at every layer.
    if (gelu) {
      at::gelu_(gate, "tanh");
    } else {
      at::silu_(gate);
    }
    gate.mul_(gate_up.narrow(1, I, I));
  }
  const at::Tensor out = at::linear(gate, w.w_down, w.b_down);
  return config.sandwich_norms ? RmsNorm(out, w.mlp_out_norm, config.rms_norm_eps) : out;
}

at::Tensor AttentionOutput(const LlamaLayerWeights& w, const at::Tensor& ctx,
                           const ModelConfig& config) {
  const at::Tensor out = at::linear(ctx, w.w_o, w.b_o);
  return config.sandwich_norms ? RmsNorm(out, w.attn_out_norm, config.rms_norm_eps) : out;
}

at::Tensor SoftCap(const at::Tensor& x, double cap) {
  return cap > 0 ? at::tanh(x / cap) * cap : x;
}

std::pair<at::Tensor, at::Tensor> LayerRopeTables(std::int64_t T, const ModelConfig& config,
                                                  std::int64_t layer, const at::Device& device) {
  return RopeTables(T, config.RopeOf(layer), device);
}

// Additive mask [T, T]: 0 where key j is visible to query i (j <= i, inside the sliding window
// when there is one), -inf elsewhere.
at::Tensor CausalMask(std::int64_t T, std::int64_t sliding_window, const at::Device& device) {
  at::Tensor i = at::arange(T, at::kLong).unsqueeze(1);
  at::Tensor j = at::arange(T, at::kLong).unsqueeze(0);
  at::Tensor hidden = j > i;
  if (sliding_window > 0) hidden = hidden.logical_or(j <= i - sliding_window);
  return at::zeros({T, T}, at::kFloat)
      .masked_fill(hidden, -std::numeric_limits<float>::infinity())
      .to(device);
}

namespace {

// Reconstruct mode: rotated queries [B, T, H, d] and keys [B, T, KVs, d] projected onto the
// cached key heads; returns [N, (H + KV) d] (queries then keys), row-major.
at::Tensor ProjectReconstructed(const at::Tensor& q_rope, const at::Tensor& k_rope,
                                const LlamaLayerWeights& w, std::int64_t B, std::int64_t T) {
  const std::int64_t H = w.q_cache_proj.size(0), KV = w.k_cache_proj.size(0);
  const std::int64_t d = w.k_cache_proj.size(1);
  const auto [q, k] = ReconstructQueryKey(q_rope, k_rope, w.q_cache_proj, w.k_cache_proj);
  return at::cat({q.reshape({B * T, H * d}), k.reshape({B * T, KV * d})}, 1);
}

FloatView ViewOf(const at::Tensor& cpu) {
  return FloatView{cpu.data_ptr<float>(), cpu.sizes().vec()};
}

}  // namespace

at::Device ParseDevice(const std::string& spec) {
  if (spec == "cpu") return at::Device(at::kCPU);
  if (spec.rfind("cuda", 0) == 0) {
    if (!at::hasCUDA()) {
      Fail("--device " + spec,
           "this kvfold was built against a LibTorch without CUDA (see README: CUDA builds)");
    }
    at::Device device(at::kCPU);
    try {
      device = at::Device(spec);
    } catch (const c10::Error&) {
      Fail("--device " + spec, "not a device name (use cpu, cuda or cuda:N)");
    }
    const int count = at::detail::getCUDAHooks().getNumGPUs();
    // Plain "cuda" under mpirun: one rank per GPU, by the rank's place on its machine.
    if (!device.has_index() && count > 0) {
      device = at::Device(at::kCUDA, static_cast<c10::DeviceIndex>(LocalRank() % count));
    }
    if (device.index() >= count || count == 0) {
      Fail("--device " + spec, "no such CUDA device (" + std::to_string(count) + " visible)");
    }
    return device;
  }
  Fail("--device " + spec, "unknown device (use cpu, cuda or cuda:N)");
}

namespace {

// Collects the tensors an observer asked for as CPU float32 copies, then hands them over at once.
class PendingCapture {
 public:
  PendingCapture(LayerObserver* observer, int layer, std::int64_t sequence)
      : observer_(observer), wants_(observer ? observer->Wants(layer) : 0u) {
    capture_.layer = layer;
    capture_.sequence = sequence;
  }
  bool active() const { return wants_ != 0; }
  bool Wants(unsigned bit) const { return (wants_ & bit) != 0; }
  void Take(unsigned bit, const at::Tensor& t, FloatView AttentionCapture::*field) {
    if (!(wants_ & bit)) return;
    keep_.push_back(t.to(at::kCPU).clone(at::MemoryFormat::Contiguous));
    capture_.*field = ViewOf(keep_.back());
  }
  void Deliver() {
    if (active()) observer_->Observe(capture_);
  }

 private:
  LayerObserver* observer_;
  unsigned wants_;
  AttentionCapture capture_;
  std::vector<at::Tensor> keep_;
};

// What a cache policy decided for one layer, as CPU tensors: codes [B, KV, T, T] and, when it
// quantizes, the stored keys and values [B, KV, T, d].
struct LayerCache {
  at::Tensor codes, keys, values;
  at::Tensor queries;  // [B * T, H * d] rounded as the runtime reads stored keys, or undefined
  // Score extras (KvCachePolicy::ScoreExtras): [B * T, H * E] and [B, KV, T, E], or undefined.
  at::Tensor query_extras, key_extras;
  CacheLayer View() const {
    auto data = [](const at::Tensor& t) { return t.defined() ? t.data_ptr<float>() : nullptr; };
    return {codes.data_ptr<std::uint8_t>(),
            data(keys),
            data(values),
            data(queries),
            key_extras.defined() ? key_extras.size(-1) : 0,
            data(query_extras),
            data(key_extras)};
  }
};

// `rotated` is the layer's [B * T, (H + 2 KV) d] rotated q/k/v.
LayerCache RunCachePolicy(const KvCachePolicy& cache, int layer, const at::Tensor& rotated,
                          const QkvLayout& layout, std::int64_t first_sequence) {
  const at::Tensor rows = rotated.to(at::kCPU).contiguous();
  const std::int64_t B = layout.batch, KV = layout.kv_heads, T = layout.tokens, d = layout.head_dim;
  LayerCache out;
  out.codes = at::empty({B, KV, T, T}, at::kByte);
  const std::int64_t E = cache.Quantizes(layer) ? cache.ScoreExtras(layer, d) : 0;
  if (cache.Quantizes(layer)) {
    out.keys = at::empty({B, KV, T, d}, at::kFloat);
    out.values = at::empty({B, KV, T, d}, at::kFloat);
  }
  if (E > 0) out.key_extras = at::empty({B, KV, T, E}, at::kFloat);
  const float* data = rows.data_ptr<float>();
  std::uint8_t* codes = out.codes.data_ptr<std::uint8_t>();
  float* keys = out.keys.defined() ? out.keys.data_ptr<float>() : nullptr;
  float* values = out.values.defined() ? out.values.data_ptr<float>() : nullptr;
  float* key_extras = E > 0 ? out.key_extras.data_ptr<float>() : nullptr;
  at::parallel_for(0, B * KV, 1, [&](std::int64_t begin, std::int64_t end) {
    for (std::int64_t pair = begin; pair < end; ++pair) {
      const std::int64_t b = pair / KV, g = pair % KV;
      HeadCacheOut head;
      head.codes = codes + pair * T * T;
      head.keys = keys ? keys + pair * T * d : nullptr;
      head.values = values ? values + pair * T * d : nullptr;
      head.key_extras = key_extras ? key_extras + pair * T * E : nullptr;
      cache.HeadCache(layer, data, layout, b, g, first_sequence + b, head);
    }
  });
  if (cache.Quantizes(layer) && cache.RoundsQueries(layer)) {
    out.queries = rows.narrow(1, 0, layout.heads * d).contiguous();
    if (E > 0) out.query_extras = at::empty({B * T, layout.heads * E}, at::kFloat);
    cache.RoundQueries(layer, out.queries.data_ptr<float>(), B * T * layout.heads, d,
                       E > 0 ? out.query_extras.data_ptr<float>() : nullptr);
  }
  return out;
}

// Attention through ATen ops (any device): GQA without repeating K/V, the `group` query heads
// of a KV head stacked along the row axis so one batched matmul per KV head computes all their
// scores. `rotated` is [B * T, (H + 2 KV) d]; `mask` the [T, T] causal/window mask; `cache`
// (with `policy`) the layer's cache decisions. Returns ctx [B * T, H d].
at::Tensor AttentionAten(const at::Tensor& rotated, const QkvLayout& L, double scale,
                         double softcap, const at::Tensor& mask, bool policy,
                         const LayerCache& cache) {
  const std::int64_t B = L.batch, T = L.tokens, H = L.heads, KV = L.kv_heads, d = L.head_dim,
                     group = H / KV;
  const at::Device device = rotated.device();
  auto head_major = [&](std::int64_t offset, std::int64_t n) {  // -> [B, n, T, d]
    return rotated.narrow(1, offset * d, n * d).view({B, T, n, d}).permute({0, 2, 1, 3});
  };
  const at::Tensor qg = (head_major(0, H) * scale).reshape({B, KV, group * T, d});
  at::Tensor probs = at::matmul(qg, head_major(H, KV).transpose(-1, -2)).view({B, KV, group, T, T});
  at::Tensor layer_mask = mask.view({1, 1, 1, T, T});
  at::Tensor codes;
  if (policy) {
    codes = cache.codes.to(device).view({B, KV, 1, T, T});
    if (cache.keys.defined()) {  // scores against the stored keys where the code says so
      const at::Tensor qs =
          cache.queries.defined()
              ? (cache.queries.to(device).view({B, T, H, d}).permute({0, 2, 1, 3}) * scale)
                    .reshape({B, KV, group * T, d})
              : qg;
      at::Tensor stored = at::matmul(qs, cache.keys.to(device).transpose(-1, -2));
      if (cache.key_extras.defined()) {  // [B, KV, group T, E] x [B, KV, E, T]
        const std::int64_t E = cache.key_extras.size(-1);
        const at::Tensor qe =
            (cache.query_extras.to(device).view({B, T, H, E}).permute({0, 2, 1, 3}) * scale)
                .reshape({B, KV, group * T, E});
        stored = stored + at::matmul(qe, cache.key_extras.to(device).transpose(-1, -2));
      }
      stored = stored.view({B, KV, group, T, T});
      probs = at::where(codes.bitwise_and(kCacheQuantKey).ne(0), stored, probs);
    }
    // Evicted keys: -inf on top of the causal/window mask.
    layer_mask =
        layer_mask.masked_fill(codes.eq(kCacheHidden), -std::numeric_limits<float>::infinity());
  }
  probs = at::softmax(SoftCap(probs, softcap) + layer_mask, -1);
  at::Tensor heads_ctx;                    // [B, KV, group T, d]
  if (policy && cache.values.defined()) {  // split each row between full and stored values
    const at::Tensor from_stored = codes.bitwise_and(kCacheQuantValue).ne(0);
    const at::Tensor p_stored =
        probs.masked_fill(from_stored.logical_not(), 0).view({B, KV, group * T, T});
    const at::Tensor p_full = probs.masked_fill(from_stored, 0).view({B, KV, group * T, T});
    heads_ctx =
        at::matmul(p_full, head_major(H + KV, KV)) + at::matmul(p_stored, cache.values.to(device));
  } else {
    heads_ctx = at::matmul(probs.view({B, KV, group * T, T}), head_major(H + KV, KV));
  }
  return heads_ctx.view({B, H, T, d}).permute({0, 2, 1, 3}).reshape({B * T, H * d});
}

}  // namespace

at::Tensor BelowDiagonalMask(std::int64_t T, const at::Device& device) {
  at::Tensor i = at::arange(T, at::kLong).unsqueeze(1);
  at::Tensor j = at::arange(T, at::kLong).unsqueeze(0);
  at::Tensor hidden = (j >= i).logical_and((i > 0).logical_or(j > 0));
  return at::zeros({T, T}, at::kFloat)
      .masked_fill(hidden, -std::numeric_limits<float>::infinity())
      .to(device);
}

namespace {

// Token-by-token decoding's state: per-layer K/V caches and the position being decoded.
struct DecodeCache {
  std::int64_t position = 0, length = 0;  // the token decoded now, of `length`
  std::vector<at::Tensor> keys, values;   // [B, KV, T, d] per layer that computes K/V
};

// The one layer body of the runtime: a batched forward over [B, T] tokens, layer by layer
// (prefill, calibration, the converter's stepper), or, made with Decoding(), one token at a time
// over per-layer K/V caches (T = 1 per call). Layers that read another layer's K/V (cross-layer
// sharing) take it from shared_kv: the rotated K/V [B T, 2 KV d] of their source, computed
// earlier in this pass (source below) or in the previous iteration (source above); decoding
// reads it from the source's cache.
class BatchedPass {
 public:
  BatchedPass(const ReferenceModel::Impl& m, const at::Tensor& tokens, LayerObserver* observer,
              const KvCachePolicy* cache, std::int64_t first_sequence)
      : m_(m), c_(m.config), observer_(observer), cache_(cache), first_sequence_(first_sequence) {
    Init(tokens.size(0), tokens.size(1));
    fused_ = m.use_cpu_kernels && m.device.is_cpu();
    if (c_.AttendsAbove()) below_diagonal_ = BelowDiagonalMask(T_, m.device);
    shared_kv_.resize(static_cast<std::size_t>(c_.num_hidden_layers));
    for (std::int64_t l = 0; l < c_.num_hidden_layers; ++l) {
      const std::int64_t source = c_.KvSourceOf(l);
      if (source > l) {  // read before the source ran: the LCKV iteration starts from zeros
        shared_kv_[static_cast<std::size_t>(source)] =
            at::zeros({B_ * T_, 2 * c_.KvHeads(source) * d_}, at::TensorOptions().device(m.device));
      }
    }
  }

  // Decoding `batch` sequences of `tokens` tokens: Layer takes x [B, D] of the token at
  // DecodeAt's position.
  static BatchedPass Decoding(const ReferenceModel::Impl& m, std::int64_t batch,
                              std::int64_t tokens) {
    BatchedPass pass(m, batch, tokens);
    return pass;
  }
  void DecodeAt(std::int64_t position) { decode_->position = position; }

  // Runs layer l on x in place; observe_only stops once the observer has its captures (x is
  // left unchanged).
  void Layer(std::int64_t l, const LlamaLayerWeights& w, at::Tensor& x, bool observe_only = false);
  // Per layer, the rotated K/V of the source layers run so far (layers that share K/V): a
  // Stepper carries them from one layer's pass to the next.
  std::vector<at::Tensor>& shared_kv() { return shared_kv_; }

 private:
  BatchedPass(const ReferenceModel::Impl& m, std::int64_t batch, std::int64_t tokens)
      : m_(m), c_(m.config), observer_(nullptr), cache_(nullptr), first_sequence_(0) {
    if (c_.key_projection_heads > 0)
      Fail("runtime", "token-by-token decoding of reconstruct-mode keys is not implemented");
    Init(batch, 1);
    fused_ = false;
    decode_.emplace();
    decode_->length = tokens;
    const at::TensorOptions f32 = at::TensorOptions().dtype(at::kFloat).device(m.device);
    decode_->keys.resize(static_cast<std::size_t>(c_.num_hidden_layers));
    decode_->values.resize(static_cast<std::size_t>(c_.num_hidden_layers));
    for (std::int64_t l = 0; l < c_.num_hidden_layers; ++l) {
      if (!c_.ComputesKv(l)) continue;
      decode_->keys[static_cast<std::size_t>(l)] =
          at::zeros({batch, c_.KvHeads(l), tokens, d_}, f32);
      decode_->values[static_cast<std::size_t>(l)] =
          at::zeros({batch, c_.KvHeads(l), tokens, d_}, f32);
    }
  }
  void Init(std::int64_t batch, std::int64_t tokens) {
    B_ = batch;
    T_ = tokens;
    H_ = c_.num_attention_heads;
    d_ = c_.head_dim;
    reconstruct_ = c_.key_projection_heads > 0;
    scale_ = c_.AttentionScale();
  }
  at::Tensor Rotated(std::int64_t l, const LlamaLayerWeights& w, at::Tensor& qkv,
                     PendingCapture& capture);
  // Attention of the layer's rotated q/k/v [B T, (H + 2 KV) d] (q only for a layer reading
  // another's K/V): ctx [B T, H d].
  at::Tensor BatchedAttention(std::int64_t l, at::Tensor rotated);
  at::Tensor CachedAttention(std::int64_t l, const at::Tensor& rotated);

  const ReferenceModel::Impl& m_;
  const ModelConfig& c_;
  LayerObserver* observer_;
  const KvCachePolicy* cache_;
  std::int64_t first_sequence_;
  std::int64_t B_, T_, H_, KV_ = 0, KVs_ = 0, d_;  // KV_, KVs_, layout_: the current layer's
  bool reconstruct_, fused_;
  double scale_;
  QkvLayout layout_;
  at::Tensor below_diagonal_;
  std::vector<at::Tensor> shared_kv_;
  std::optional<DecodeCache> decode_;
  // Made when a layer first needs them: RoPE tables, global and local (Gemma 3's sliding
  // layers), and masks by window.
  std::map<bool, std::pair<at::Tensor, at::Tensor>> rope_;
  std::map<std::int64_t, at::Tensor> masks_;
  // The layer's cos/sin rows of this pass's tokens (decoding: the one at its position).
  std::pair<at::Tensor, at::Tensor> Rope(std::int64_t l) {
    const bool local = c_.LocalRope(l);
    auto it = rope_.find(local);
    if (it == rope_.end()) {
      const std::int64_t length = decode_ ? decode_->length : T_;
      it = rope_.emplace(local, LayerRopeTables(length, c_, l, m_.device)).first;
    }
    if (!decode_) return it->second;
    return {it->second.first.narrow(0, decode_->position, 1),
            it->second.second.narrow(0, decode_->position, 1)};
  }
  const at::Tensor& Mask(std::int64_t window) {
    auto it = masks_.find(window);
    if (it == masks_.end()) it = masks_.emplace(window, CausalMask(T_, window, m_.device)).first;
    return it->second;
  }
};

void BatchedPass::Layer(std::int64_t l, const LlamaLayerWeights& w, at::Tensor& x,
                        bool observe_only) {
  KV_ = c_.KvHeads(l);  // per-layer KV heads (Nemotron-NAS)
  KVs_ = reconstruct_ ? c_.key_projection_heads : KV_;
  layout_ = QkvLayout{B_, T_, H_, KV_, d_, scale_};
  const std::int64_t B = B_, T = T_, H = H_, KV = KV_, KVs = KVs_, d = d_;
  const std::int64_t D = c_.hidden_size;
  const bool computes = c_.ComputesKv(l);
  const at::Tensor h = RmsNorm(x, w.attn_norm, c_.rms_norm_eps);
  at::Tensor qkv =
      at::linear(h, w.w_qkv, w.b_qkv).contiguous();  // [N, (H + KVs + KV) d], or [N, H d]
  const auto tokens = static_cast<std::uint64_t>(h.size(0));
  CountForwardFlop(2 * tokens * static_cast<std::uint64_t>(w.w_qkv.numel()));
  if (c_.qk_norm) NormalizeQueryKeyHeads(qkv, w, c_, computes ? KVs : 0);
  auto heads = [&](std::int64_t offset, std::int64_t n) {  // -> [B, T, n, d] view
    return qkv.narrow(1, offset * d, n * d).view({B, T, n, d});
  };
  PendingCapture capture(observer_, static_cast<int>(l), first_sequence_);
  if (capture.active()) {
    capture.Take(kCaptureResidual, x.view({B, T, D}), &AttentionCapture::residual);
    capture.Take(kCaptureAttnInput, h.view({B, T, D}), &AttentionCapture::attn_input);
    capture.Take(kCaptureQueryPreRope, heads(0, H), &AttentionCapture::query_pre_rope);
    if (computes) {
      capture.Take(kCaptureKeyPreRope, heads(H, KVs), &AttentionCapture::key_pre_rope);
      capture.Take(kCaptureValue, heads(H + KVs, KV), &AttentionCapture::value);
    }
  }

  const at::Tensor rotated = Rotated(l, w, qkv, capture);
  // The context comes after attention: only an observer that wants it makes an observe-only
  // run go that far.
  const bool wants_context = capture.Wants(kCaptureContext);
  if (!wants_context) capture.Deliver();
  if (observe_only && !wants_context) return;
  const at::Tensor ctx = decode_ ? CachedAttention(l, rotated) : BatchedAttention(l, rotated);
  if (wants_context) {
    capture.Take(kCaptureContext, ctx.view({B, T, H * d}), &AttentionCapture::context);
    capture.Deliver();
  }
  if (observe_only) return;
  x.add_(AttentionOutput(w, ctx, c_));
  x.add_(MlpOutput(w, x, c_));
  CountForwardFlop(
      2 * tokens *
      static_cast<std::uint64_t>(w.w_o.numel() + w.w_gate_up.numel() + w.w_down.numel()));
}

// RoPE (and, in reconstruct mode, the key/query projections) of the projected qkv:
// rotated [N, (H + 2 KV) d], or [N, H d] for a layer that reads another's K/V.
at::Tensor BatchedPass::Rotated(std::int64_t l, const LlamaLayerWeights& w, at::Tensor& qkv,
                                PendingCapture& capture) {
  const std::int64_t B = B_, T = T_, H = H_, KV = KV_, KVs = KVs_, d = d_;
  const bool computes = c_.ComputesKv(l);
  const std::pair<at::Tensor, at::Tensor> rope = Rope(l);
  const at::Tensor &cos = rope.first, &sin = rope.second;
  auto heads = [&](std::int64_t offset, std::int64_t n) {  // -> [B, T, n, d] view
    return qkv.narrow(1, offset * d, n * d).view({B, T, n, d});
  };
  at::Tensor rotated;
  if (fused_ && !reconstruct_) {
    const QkvLayout rope_layout{B, T, H, computes ? KV : 0, d};
    float* data = qkv.data_ptr<float>();
    at::parallel_for(0, B * T, 64, [&](std::int64_t begin, std::int64_t end) {
      ApplyRopeInPlace(data, rope_layout, cos.data_ptr<float>(), sin.data_ptr<float>(), begin, end);
    });
    capture.Take(kCaptureQueryPostRope, heads(0, H), &AttentionCapture::query_post_rope);
    if (computes)
      capture.Take(kCaptureKeyPostRope, heads(H, KVs), &AttentionCapture::key_post_rope);
    rotated = qkv;
  } else {
    const at::Tensor q_rope = ApplyRope(heads(0, H), cos, sin);  // [B, T, H, d]
    capture.Take(kCaptureQueryPostRope, q_rope, &AttentionCapture::query_post_rope);
    if (computes) {
      const at::Tensor k_rope = ApplyRope(heads(H, KVs), cos, sin);
      capture.Take(kCaptureKeyPostRope, k_rope, &AttentionCapture::key_post_rope);
      const at::Tensor qk =
          reconstruct_
              ? ProjectReconstructed(q_rope, k_rope, w, B, T)
              : at::cat({q_rope.reshape({B * T, H * d}), k_rope.reshape({B * T, KV * d})}, 1);
      rotated = at::cat({qk, qkv.narrow(1, (H + KVs) * d, KV * d)}, 1).contiguous();
    } else {
      rotated = q_rope.reshape({B * T, H * d});
    }
  }
  return rotated;
}

at::Tensor BatchedPass::BatchedAttention(std::int64_t l, at::Tensor rotated) {
  const std::int64_t B = B_, T = T_, H = H_, KV = KV_, d = d_;
  const std::int64_t source = c_.KvSourceOf(l);
  const std::int64_t window = c_.WindowOf(l);
  if (!c_.ComputesKv(l)) {  // this layer's queries over its source layer's K/V
    rotated = at::cat({rotated, shared_kv_[static_cast<std::size_t>(source)]}, 1).contiguous();
  } else if (c_.SharesKv()) {
    shared_kv_[static_cast<std::size_t>(l)] = rotated.narrow(1, H * d, 2 * KV * d);
  }
  // Two products (scores, then the weighted values) of d multiply-adds per head and pair; under
  // LCKV a token reads the source's K/V of earlier tokens only.
  const std::uint64_t pairs = CausalPairs(T, window) - (source > l ? CausalPairs(T, 1) : 0);
  CountForwardFlop(4 * static_cast<std::uint64_t>(B * H * d) * pairs);
  const bool policy = cache_ != nullptr && !cache_->Untouched(static_cast<int>(l));
  const LayerCache layer_cache =
      policy ? RunCachePolicy(*cache_, static_cast<int>(l), rotated, layout_, first_sequence_)
             : LayerCache();
  if (source > l) {  // LCKV: the source's K/V of earlier tokens only; the first token reads none
    at::Tensor ctx = AttentionAten(rotated, layout_, scale_, c_.attn_logit_softcap, below_diagonal_,
                                   false, LayerCache());
    ctx.view({B, T, H * d}).select(1, 0).zero_();
    return ctx;
  }
  if (fused_ && c_.attn_logit_softcap == 0) {  // the kernel has no soft-cap
    at::Tensor ctx = at::empty({B * T, H * d}, at::kFloat);
    const float* in = rotated.data_ptr<float>();
    const CacheLayer view = policy ? layer_cache.View() : CacheLayer();
    float* out = ctx.data_ptr<float>();
    at::parallel_for(0, B * KV, 1, [&](std::int64_t begin, std::int64_t end) {
      CausalAttention(in, layout_, static_cast<float>(scale_), window, policy ? &view : nullptr,
                      out, begin, end);
    });
    return ctx;
  }
  return AttentionAten(rotated, layout_, scale_, c_.attn_logit_softcap, Mask(window), policy,
                       layer_cache);
}

// The token at decode_->position: its K/V appended to the layer's cache, its queries over the
// cached keys [first, end) of the layer's source (a source above this layer has not seen the
// token yet; a sliding window drops the oldest).
at::Tensor BatchedPass::CachedAttention(std::int64_t l, const at::Tensor& rotated) {
  const std::int64_t B = B_, H = H_, d = d_, t = decode_->position;
  const std::int64_t source = c_.KvSourceOf(l);
  const std::int64_t KV = c_.KvHeads(source), group = H / KV;
  const auto at_layer = [](std::vector<at::Tensor>& v, std::int64_t i) -> at::Tensor& {
    return v[static_cast<std::size_t>(i)];
  };
  if (c_.ComputesKv(l)) {
    at_layer(decode_->keys, l)
        .select(2, t)
        .copy_(rotated.narrow(1, H * d, KV * d).view({B, KV, d}));
    at_layer(decode_->values, l)
        .select(2, t)
        .copy_(rotated.narrow(1, (H + KV) * d, KV * d).view({B, KV, d}));
  }
  const std::int64_t end = source > l ? t : t + 1;
  const std::int64_t window = c_.WindowOf(l);
  const std::int64_t first = window > 0 ? std::max<std::int64_t>(0, t + 1 - window) : 0;
  if (end <= first) return at::zeros({B, H * d}, rotated.options());
  CountForwardFlop(4 * static_cast<std::uint64_t>(B * H * d * (end - first)));
  const at::Tensor keys = at_layer(decode_->keys, source).narrow(2, first, end - first);
  const at::Tensor values = at_layer(decode_->values, source).narrow(2, first, end - first);
  const at::Tensor qg = rotated.narrow(1, 0, H * d).view({B, KV, group, d}) * scale_;
  const at::Tensor probs =  // [B, KV, group, n]
      at::softmax(SoftCap(at::matmul(qg, keys.transpose(-1, -2)), c_.attn_logit_softcap), -1);
  return at::matmul(probs, values).reshape({B, H * d});
}

}  // namespace

at::Tensor DecodeTokenByToken(const ReferenceModel::Impl& m, const at::Tensor& tokens) {
  c10::InferenceMode inference;
  const ModelConfig& c = m.config;
  const std::int64_t B = tokens.size(0), T = tokens.size(1);
  BatchedPass pass = BatchedPass::Decoding(m, B, T);
  at::Tensor logits = at::empty({B, T, c.vocab_size}, at::TensorOptions().device(m.device));
  for (std::int64_t t = 0; t < T; ++t) {
    pass.DecodeAt(t);
    at::Tensor x = m.Embed(tokens.narrow(1, t, 1));  // [B, D]
    for (std::int64_t l = 0; l < c.num_hidden_layers; ++l)
      pass.Layer(l, m.layers[static_cast<std::size_t>(l)], x);
    logits.select(1, t).copy_(SoftCap(
        at::linear(RmsNorm(x, m.final_norm, c.rms_norm_eps), m.lm_head), c.final_logit_softcap));
  }
  return logits;
}

at::Tensor ReferenceModel::Impl::Forward(const at::Tensor& tokens, LayerObserver* observer,
                                         const KvCachePolicy* cache,
                                         std::int64_t first_sequence) const {
  c10::InferenceMode inference;
  const std::int64_t B = tokens.size(0), T = tokens.size(1);
  if (config.SharesKv() && cache != nullptr) {
    Fail("--kv-cache",
         "decode-time cache policies on a model whose layers share K/V are not supported");
  }
  if (DecodesTokenByToken()) {
    if (observer != nullptr || cache != nullptr) {
      Fail("runtime", "token-by-token decoding takes no observer or cache policy");
    }
    return DecodeTokenByToken(*this, tokens);
  }
  const at::Tensor x = HiddenStates(tokens, observer, cache, first_sequence);
  return SoftCap(at::linear(RmsNorm(x, final_norm, config.rms_norm_eps), LmHead()),
                 config.final_logit_softcap)
      .view({B, T, -1});
}

at::Tensor ReferenceModel::Impl::HiddenStates(const at::Tensor& tokens, LayerObserver* observer,
                                              const KvCachePolicy* cache,
                                              std::int64_t first_sequence) const {
  SweepOptions options;
  if (observer != nullptr) options.observers = {observer};
  options.cache = cache;
  options.first_sequences = {first_sequence};
  return SweepHiddenStates({tokens}, options).Get(0, device);
}

namespace {

// The order layers run in: every layer once, except that for LCKV's parallel encoding the
// layers from the first one that reads a higher layer (`low`) up to the highest layer so read
// (`high`) run `iterations` times, each restarting from the hidden states that entered `low` and
// reading the K/V the previous iteration left (zeros before the first).
struct LayerSchedule {
  std::int64_t low = 0, high = -1;  // the iterated range; empty when high < low
  int iterations = 0;
};

// Every layer a sweep takes, in the order it takes them (the loops in SweepHiddenStates).
std::vector<std::int64_t> LayerOrder(const LayerSchedule& s, std::int64_t L) {
  std::vector<std::int64_t> order;
  for (std::int64_t l = 0; l < std::min(s.low, L); ++l) order.push_back(l);
  if (s.high < s.low) return order;
  for (int it = 0; it < s.iterations; ++it) {
    for (std::int64_t l = s.low; l <= s.high; ++l) order.push_back(l);
  }
  for (std::int64_t l = s.high + 1; l < L; ++l) order.push_back(l);
  return order;
}

LayerSchedule ScheduleOf(const ModelConfig& config, int lckv_iterations) {
  LayerSchedule s;
  s.low = config.num_hidden_layers;
  for (std::int64_t l = 0; l < config.num_hidden_layers; ++l) {
    if (config.KvSourceOf(l) > l) {
      s.low = std::min(s.low, l);
      s.high = std::max(s.high, config.KvSourceOf(l));
    }
  }
  s.iterations = lckv_iterations;
  return s;
}

}  // namespace

HiddenStateStore ReferenceModel::Impl::SweepHiddenStates(const std::vector<at::Tensor>& batches,
                                                         const SweepOptions& o) const {
  c10::InferenceMode inference;
  if (DecodesTokenByToken()) {
    Fail("runtime",
         "this model is decoded token by token: its layers cannot be observed in a batched pass");
  }
  if (config.AttendsAbove() && !o.observers.empty()) {
    Fail("calibration", "observing a model whose layers read higher layers' K/V is not supported");
  }
  const std::size_t n = batches.size();
  std::vector<std::unique_ptr<BatchedPass>> passes;
  HiddenStateStore x(hidden_state_budget_bytes);
  for (std::size_t b = 0; b < n; ++b) {
    LayerObserver* observer = o.observers.empty() ? nullptr : o.observers[b % o.observers.size()];
    const std::int64_t first =
        o.first_sequences.empty() ? static_cast<std::int64_t>(b) : o.first_sequences.at(b);
    passes.push_back(std::make_unique<BatchedPass>(*this, batches[b], observer, o.cache, first));
    x.Add(Embed(batches[b]));  // [N, D]
  }
  // Slots follow the observers so that batch b's observer is only ever used by one thread.
  const std::size_t slots =
      o.observers.empty() ? DataParallelSlots(device.is_cpu()) : o.observers.size();
  std::int64_t layers_done = 0;
  const LayerSchedule s = ScheduleOf(config, lckv_iterations);
  const std::int64_t L = config.num_hidden_layers;
  LayerPrefetch layers(*this, LayerOrder(s, L));
  auto step = [&](std::int64_t l) {
    {
      const std::shared_ptr<const LlamaLayerWeights> w = layers.Take(l);
      RunDataParallel(
          slots, n,
          [&](std::size_t b, std::size_t) {
            at::Tensor xb = x.Get(b, device);
            passes[b]->Layer(l, *w, xb);
            x.Put(b, xb);
          },
          [](std::size_t) {});
    }  // this layer is freed before after_layer runs (it may need the memory); the next is being
       // read
    if (o.after_layer) o.after_layer(++layers_done);
  };
  for (std::int64_t l = 0; l < std::min(s.low, L); ++l) step(l);
  if (s.high >= s.low) {
    const HiddenStateStore x_low = x.Clone(device);
    for (int it = 0; it < s.iterations; ++it) {
      x = x_low.Clone(device);
      for (std::int64_t l = s.low; l <= s.high; ++l) step(l);
    }
    for (std::int64_t l = s.high + 1; l < L; ++l) step(l);
  }
  return x;
}

namespace {

// Drops the K/V of source layers no layer after `layer` reads, except those `kept`.
void ForgetUnreadKv(const ModelConfig& c, std::int64_t layer,
                    std::map<std::int64_t, HiddenStateStore>& kv,
                    const std::set<std::int64_t>& kept) {
  for (auto it = kv.begin(); it != kv.end();) {
    const bool keep = c.ReadsKvAfter(it->first, layer) || kept.count(it->first) > 0;
    it = keep ? std::next(it) : kv.erase(it);
  }
}

// Room in `store` for each batch's K/V of source layer `layer`.
void ReserveSharedKv(const ModelConfig& c, std::int64_t layer,
                     const std::vector<at::Tensor>& batches, HiddenStateStore& store) {
  for (const at::Tensor& tokens : batches)
    store.Reserve({tokens.numel(), 2 * c.KvHeads(layer) * c.head_dim});
}

}  // namespace

void ReferenceModel::Stepper::Run(int layer, const ModelConfig& layer_config,
                                  const LayerWeightSource& weights,
                                  const std::vector<LayerObserver*>& observers, bool advance) {
  c10::InferenceMode inference;
  State& s = *state_;
  const std::int64_t source = layer_config.KvSourceOf(layer);
  if (source > layer && s.shared_kv.count(source) == 0) {
    Fail("calibration", "layer " + std::to_string(layer) + " reads the K/V of layer " +
                            std::to_string(source) +
                            " above it (lckv), which no sweep has handed this one");
  }
  ReleaseLayerMemory();  // the previous layer's buffers (tensor_cache.h)
  s.model.config = layer_config;
  RunLayer(layer, LoadLayerWeights(weights, layer_config, layer, s.model.device, &s.weights),
           observers, advance);
  if (!advance) return;
  // The layer is done: its weights leave (their buffers wait for the next layer's, of the same
  // shapes; after the last layer they go too).
  s.weights.Retire();
  if (layer + 1 >= layer_config.num_hidden_layers) s.weights = LayerWeightCache();
}

void ReferenceModel::Stepper::RunLayer(int layer, const LlamaLayerWeights& w,
                                       const std::vector<LayerObserver*>& observers, bool advance) {
  State& s = *state_;
  const ModelConfig& c = s.model.config;
  const std::size_t n = s.tokens.size();
  const std::size_t slots =
      observers.empty() ? DataParallelSlots(s.model.device.is_cpu()) : observers.size();
  const bool keeps_kv = advance && (c.ReadsKvAfter(layer, layer) || s.kept_kv.count(layer) > 0);
  if (keeps_kv)
    ReserveSharedKv(c, layer, s.tokens,
                    s.shared_kv.emplace(layer, s.hidden.budget_bytes()).first->second);
  const std::int64_t source = c.KvSourceOf(layer);
  RunDataParallel(
      slots, n,
      [&](std::size_t b, std::size_t) {
        LayerObserver* observer = observers.empty() ? nullptr : observers[b % observers.size()];
        BatchedPass pass(s.model, s.tokens[b], observer, nullptr, s.first_sequences[b]);
        if (!c.ComputesKv(layer))
          pass.shared_kv()[static_cast<std::size_t>(source)] =
              s.shared_kv.at(source).Get(b, s.model.device);
        at::Tensor x = s.hidden.Get(b, s.model.device);
        pass.Layer(layer, w, x, /*observe_only=*/!advance);
        if (!advance) return;
        s.hidden.Put(b, x);
        // A compact copy: the pass's K/V is a view into its queries' buffer.
        if (keeps_kv)
          s.shared_kv.at(layer).Put(b,
                                    pass.shared_kv()[static_cast<std::size_t>(layer)].contiguous());
      },
      [](std::size_t) {});
  if (advance) ForgetUnreadKv(c, layer, s.shared_kv, s.kept_kv);
}

void ReferenceModel::Stepper::KeepKv(int layer) { state_->kept_kv.insert(layer); }

void ReferenceModel::Stepper::HandKvTo(int layer, Stepper& to) {
  auto node = state_->shared_kv.extract(layer);
  if (node.empty()) Fail("calibration", "layer " + std::to_string(layer) + "'s K/V were not kept");
  state_->kept_kv.erase(layer);
  to.state_->shared_kv.insert(std::move(node));
}

}  // namespace kvfold
