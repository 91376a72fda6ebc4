// The reference forward pass of the Llama family, batched over equal-length sequences.
#include "runtime_check/llama_forward.h"

#include <ATen/detail/CUDAHooksInterface.h>
#include <ATen/Parallel.h>
#include <c10/core/InferenceMode.h>

#include <cmath>

#include "formats/error.h"
#include "runtime_check/attention_cpu.h"

namespace kvfold {
namespace {

at::Tensor RmsNorm(const at::Tensor& x, const at::Tensor& weight, double eps) {
  return x * at::rsqrt(x.pow(2).mean(-1, /*keepdim=*/true) + eps) * weight;
}

// cos/sin of pos * theta^(-2j/d) for pos < T, j < d/2, as [T, d/2]. Angles are formed in double:
// at position 255 a float32 angle would already be off by ~1e-5 rad.
std::pair<at::Tensor, at::Tensor> RopeTables(std::int64_t T, std::int64_t d, double theta,
                                             const at::Device& device) {
  const std::int64_t half = d / 2;
  at::Tensor cos = at::empty({T, half}, at::kFloat);
  at::Tensor sin = at::empty({T, half}, at::kFloat);
  float* c = cos.data_ptr<float>();
  float* s = sin.data_ptr<float>();
  for (std::int64_t j = 0; j < half; ++j) {
    const double freq = std::pow(theta, -2.0 * static_cast<double>(j) / static_cast<double>(d));
    for (std::int64_t p = 0; p < T; ++p) {
      c[p * half + j] = static_cast<float>(std::cos(p * freq));
      s[p * half + j] = static_cast<float>(std::sin(p * freq));
    }
  }
  return {cos.to(device), sin.to(device)};
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

// Reconstruct mode: project rotated queries [B, T, H, d] and keys [B, T, KVs, d] onto the
// cached key heads; returns [N, (H + KV) d] (queries then keys), row-major.
at::Tensor ProjectReconstructed(const at::Tensor& q_rope, const at::Tensor& k_rope,
                                const LlamaLayerWeights& w, std::int64_t B, std::int64_t T) {
  const std::int64_t H = w.q_cache_proj.size(0), KV = w.k_cache_proj.size(0);
  const std::int64_t d = w.k_cache_proj.size(1), td = w.k_cache_proj.size(2);
  // q'_h = Psi_j q_h: [B, T, H, 1, d] x [H, d, d]^T -> [B, T, H, 1, d]
  const at::Tensor q = at::matmul(q_rope.unsqueeze(-2), w.q_cache_proj.transpose(-1, -2));
  // k'_g = Psi_g [k_{g t}; ...; k_{g t + t - 1}]: [B, T, KV, 1, t d] x [KV, t d, d]
  const at::Tensor k = at::matmul(k_rope.reshape({B, T, KV, 1, td}), w.k_cache_proj.transpose(-1, -2));
  return at::cat({q.reshape({B * T, H * d}), k.reshape({B * T, KV * d})}, 1);
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
  PendingCapture(LayerObserver* observer, int layer)
      : observer_(observer), wants_(observer ? observer->Wants(layer) : 0u) {
    capture_.layer = layer;
  }
  bool active() const { return wants_ != 0; }
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
  CacheLayer View() const {
    return {codes.data_ptr<std::uint8_t>(), keys.defined() ? keys.data_ptr<float>() : nullptr,
            values.defined() ? values.data_ptr<float>() : nullptr};
  }
};

// `rotated` is the layer's [B * T, (H + 2 KV) d] rotated q/k/v.
LayerCache RunCachePolicy(const KvCachePolicy& cache, int layer, const at::Tensor& rotated,
                          const QkvLayout& layout, std::int64_t first_sequence) {
  const at::Tensor rows = rotated.to(at::kCPU).contiguous();
  const std::int64_t B = layout.batch, KV = layout.kv_heads, T = layout.tokens, d = layout.head_dim;
  LayerCache out;
  out.codes = at::empty({B, KV, T, T}, at::kByte);
  if (cache.Quantizes(layer)) {
    out.keys = at::empty({B, KV, T, d}, at::kFloat);
    out.values = at::empty({B, KV, T, d}, at::kFloat);
  }
  const float* data = rows.data_ptr<float>();
  std::uint8_t* codes = out.codes.data_ptr<std::uint8_t>();
  float* keys = out.keys.defined() ? out.keys.data_ptr<float>() : nullptr;
  float* values = out.values.defined() ? out.values.data_ptr<float>() : nullptr;
  at::parallel_for(0, B * KV, 1, [&](std::int64_t begin, std::int64_t end) {
    for (std::int64_t pair = begin; pair < end; ++pair) {
      const std::int64_t b = pair / KV, g = pair % KV;
      HeadCacheOut head;
      head.codes = codes + pair * T * T;
      head.keys = keys ? keys + pair * T * d : nullptr;
      head.values = values ? values + pair * T * d : nullptr;
      cache.HeadCache(layer, data, layout, b, g, first_sequence + b, head);
    }
  });
  return out;
}

// Attention through ATen ops (any device): GQA without repeating K/V, the `group` query heads
// of a KV head stacked along the row axis so one batched matmul per KV head computes all their
// scores. `rotated` is [B * T, (H + 2 KV) d]; `mask` the [T, T] causal/window mask; `cache`
// (with `policy`) the layer's cache decisions. Returns ctx [B * T, H d].
at::Tensor AttentionAten(const at::Tensor& rotated, const QkvLayout& L, double scale, const at::Tensor& mask,
                         bool policy, const LayerCache& cache) {
  const std::int64_t B = L.batch, T = L.tokens, H = L.heads, KV = L.kv_heads, d = L.head_dim, group = H / KV;
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
      const at::Tensor stored = at::matmul(qg, cache.keys.to(device).transpose(-1, -2)).view({B, KV, group, T, T});
      probs = at::where(codes.bitwise_and(kCacheQuantKey).ne(0), stored, probs);
    }
    // Evicted keys: -inf on top of the causal/window mask.
    layer_mask = layer_mask.masked_fill(codes.eq(kCacheHidden), -std::numeric_limits<float>::infinity());
  }
  probs = at::softmax(probs + layer_mask, -1);
  at::Tensor heads_ctx;  // [B, KV, group T, d]
  if (policy && cache.values.defined()) {  // split each row between full and stored values
    const at::Tensor from_stored = codes.bitwise_and(kCacheQuantValue).ne(0);
    const at::Tensor p_stored = probs.masked_fill(from_stored.logical_not(), 0).view({B, KV, group * T, T});
    const at::Tensor p_full = probs.masked_fill(from_stored, 0).view({B, KV, group * T, T});
    heads_ctx = at::matmul(p_full, head_major(H + KV, KV)) + at::matmul(p_stored, cache.values.to(device));
  } else {
    heads_ctx = at::matmul(probs.view({B, KV, group * T, T}), head_major(H + KV, KV));
  }
  return heads_ctx.view({B, H, T, d}).permute({0, 2, 1, 3}).reshape({B * T, H * d});
}

}  // namespace

at::Tensor ReferenceModel::Impl::Forward(const at::Tensor& tokens, LayerObserver* observer,
                                         const KvCachePolicy* cache, std::int64_t first_sequence) const {
  c10::InferenceMode inference;
  const std::int64_t B = tokens.size(0), T = tokens.size(1);
  const std::int64_t H = config.num_attention_heads, KV = config.num_key_value_heads;
  const std::int64_t d = config.head_dim, D = config.hidden_size, I = config.intermediate_size;
  // Key heads produced by k_proj: more than the cached KV heads in reconstruct mode.
  const bool reconstruct = config.key_projection_heads > 0;
  const std::int64_t KVs = reconstruct ? config.key_projection_heads : KV;
  const double eps = config.rms_norm_eps;
  const double scale = 1.0 / std::sqrt(static_cast<double>(d));
  const bool fused = use_cpu_kernels && device.is_cpu();
  const QkvLayout layout{B, T, H, KV, d};

  auto [cos, sin] = RopeTables(T, d, config.rope_theta, device);
  const at::Tensor mask = fused ? at::Tensor() : CausalMask(T, config.sliding_window, device);

  at::Tensor x = at::embedding(embed, tokens.reshape({B * T}));  // [N, D]
  for (std::size_t l = 0; l < layers.size(); ++l) {
    const LlamaLayerWeights& w = layers[l];
    const at::Tensor h = RmsNorm(x, w.attn_norm, eps);
    at::Tensor qkv = at::linear(h, w.w_qkv, w.b_qkv).contiguous();  // [N, (H + KVs + KV) d]
    auto heads = [&](std::int64_t offset, std::int64_t n) {        // -> [B, T, n, d] view
      return qkv.narrow(1, offset * d, n * d).view({B, T, n, d});
    };
    PendingCapture capture(observer, static_cast<int>(l));
    if (capture.active()) {
      capture.Take(kCaptureAttnInput, h.view({B, T, D}), &AttentionCapture::attn_input);
      capture.Take(kCaptureQueryPreRope, heads(0, H), &AttentionCapture::query_pre_rope);
      capture.Take(kCaptureKeyPreRope, heads(H, KVs), &AttentionCapture::key_pre_rope);
      capture.Take(kCaptureValue, heads(H + KVs, KV), &AttentionCapture::value);
    }

    // RoPE (and, in reconstruct mode, the key/query projections) -> rotated [N, (H + 2 KV) d].
    at::Tensor rotated;
    if (fused && !reconstruct) {
      float* data = qkv.data_ptr<float>();
      at::parallel_for(0, B * T, 64, [&](std::int64_t begin, std::int64_t end) {
        ApplyRopeInPlace(data, layout, cos.data_ptr<float>(), sin.data_ptr<float>(), begin, end);
      });
      capture.Take(kCaptureQueryPostRope, heads(0, H), &AttentionCapture::query_post_rope);
      capture.Take(kCaptureKeyPostRope, heads(H, KVs), &AttentionCapture::key_post_rope);
      rotated = qkv;
    } else {
      const at::Tensor q_rope = ApplyRope(heads(0, H), cos, sin);  // [B, T, H, d]
      const at::Tensor k_rope = ApplyRope(heads(H, KVs), cos, sin);
      capture.Take(kCaptureQueryPostRope, q_rope, &AttentionCapture::query_post_rope);
      capture.Take(kCaptureKeyPostRope, k_rope, &AttentionCapture::key_post_rope);
      const at::Tensor qk = reconstruct ? ProjectReconstructed(q_rope, k_rope, w, B, T)
                                        : at::cat({q_rope.reshape({B * T, H * d}),
                                                   k_rope.reshape({B * T, KV * d})}, 1);
      rotated = at::cat({qk, qkv.narrow(1, (H + KVs) * d, KV * d)}, 1).contiguous();
    }
    capture.Deliver();

    const bool policy = cache != nullptr && !cache->Untouched(static_cast<int>(l));
    const LayerCache layer_cache =
        policy ? RunCachePolicy(*cache, static_cast<int>(l), rotated, layout, first_sequence) : LayerCache();
    at::Tensor ctx;
    if (fused) {
      ctx = at::empty({B * T, H * d}, at::kFloat);
      const float* in = rotated.data_ptr<float>();
      const CacheLayer view = policy ? layer_cache.View() : CacheLayer();
      float* out = ctx.data_ptr<float>();
      at::parallel_for(0, B * KV, 1, [&](std::int64_t begin, std::int64_t end) {
        CausalAttention(in, layout, static_cast<float>(scale), config.sliding_window, policy ? &view : nullptr, out,
                        begin, end);
      });
    } else {
      ctx = AttentionAten(rotated, layout, scale, mask, policy, layer_cache);
    }
    x.add_(at::linear(ctx, w.w_o, w.b_o));

    const at::Tensor h2 = RmsNorm(x, w.mlp_norm, eps);
    const at::Tensor gate_up = at::linear(h2, w.w_gate_up, w.b_gate_up);
    x.add_(at::linear(at::silu(gate_up.narrow(1, 0, I)) * gate_up.narrow(1, I, I), w.w_down,
                      w.b_down));
  }
  return at::linear(RmsNorm(x, final_norm, eps), lm_head).view({B, T, -1});
}

}  // namespace kvfold
