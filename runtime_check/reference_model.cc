#include "runtime_check/reference_model.h"

#include <ATen/Parallel.h>
#include <c10/core/InferenceMode.h>

#include <algorithm>
#include <functional>
#include <numeric>
#include <utility>

#include "formats/error.h"
#include "formats/ranks.h"
#include "formats/tensor_names.h"
#include "runtime_check/attention_cpu.h"
#include "runtime_check/blas_threads.h"
#include "runtime_check/data_parallel.h"
#include "runtime_check/llama_forward.h"
#include "runtime_check/tensor_cache.h"

namespace kvfold {
namespace {

at::Tensor LoadTensor(const Checkpoint& ck, const TensorId& id, const at::Device& device) {
  const TensorRef& ref = ck.Tensor(id);
  at::Tensor t = at::empty(ref.entry->shape, at::kFloat);
  ck.tensors.ReadF32(ref.entry->name, t.data_ptr<float>());
  return t.to(device);
}

// ids as an int64 [rows, ids / rows] tensor on `device`; every id must be in the vocabulary.
at::Tensor TokenTensor(const std::vector<std::int32_t>& ids, int rows, std::int64_t vocab,
                       const at::Device& device, const char* where) {
  if (ids.empty() || rows <= 0 || ids.size() % static_cast<std::size_t>(rows) != 0) {
    Fail(where, "token count is not a positive multiple of the batch");
  }
  at::Tensor t = at::empty({rows, static_cast<std::int64_t>(ids.size()) / rows}, at::kLong);
  std::int64_t* p = t.data_ptr<std::int64_t>();
  for (std::size_t i = 0; i < ids.size(); ++i) {
    if (ids[i] < 0 || ids[i] >= vocab) {
      Fail(where, "token id " + std::to_string(ids[i]) + " is outside the vocabulary");
    }
    p[i] = ids[i];
  }
  return t.to(device);
}

}  // namespace

ReferenceModel::ReferenceModel(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
ReferenceModel::~ReferenceModel() = default;

namespace {

// The roles' tensors of one layer stacked by rows (one role: its tensor), float32 on the device.
using LoadRoles = std::function<at::Tensor(const std::vector<TensorRole>&)>;

// Layer l's weights from load(roles); optional tensors are asked for only when the config has them.
LlamaLayerWeights AssembleLayer(const ModelConfig& c, int l, const LoadRoles& load) {
  using R = TensorRole;
  auto maybe = [&](bool present, std::vector<TensorRole> roles) {
    return present ? load(roles) : at::Tensor();
  };
  auto norm = [&](TensorRole role) {  // Gemma's norms scale by (1 + w)
    const at::Tensor t = load({role});
    return c.norm_offset != 0 ? t + c.norm_offset : t;
  };
  LlamaLayerWeights w;
  w.attn_norm = norm(R::kAttnNorm);
  const bool kv = c.ComputesKv(l);  // else it reads another layer's K/V: queries only
  w.w_qkv = kv ? load({R::kQProj, R::kKProj, R::kVProj}) : load({R::kQProj});
  w.b_qkv = maybe(c.qkv_bias,
                  kv ? std::vector<R>{R::kQBias, R::kKBias, R::kVBias} : std::vector<R>{R::kQBias});
  w.w_o = load({R::kOProj});
  if (c.key_projection_heads > 0) {
    w.k_cache_proj = load({R::kKCacheProj});
    w.q_cache_proj = load({R::kQCacheProj});
  }
  w.b_o = maybe(c.o_bias, {R::kOBias});
  if (c.qk_norm) w.q_norm = norm(R::kQNorm);
  if (c.qk_norm && kv) w.k_norm = norm(R::kKNorm);
  if (c.sandwich_norms) {  // post_attention_layernorm is the attention output's norm here
    w.attn_out_norm = norm(R::kMlpNorm);
    w.mlp_norm = norm(R::kPreFeedforwardNorm);
    w.mlp_out_norm = norm(R::kPostFeedforwardNorm);
  } else {
    w.mlp_norm = norm(R::kMlpNorm);
  }
  w.w_gate_up = load({R::kGateProj, R::kUpProj});
  w.b_gate_up = maybe(c.mlp_bias, {R::kGateBias, R::kUpBias});
  w.w_down = load({R::kDownProj});
  w.b_down = maybe(c.mlp_bias, {R::kDownBias});
  return w;
}

// How to read one role's tensor: its shape, and a reader of its float32 values into a buffer.
struct RoleReader {
  std::function<std::vector<std::int64_t>(TensorRole)> shape;
  std::function<void(TensorRole, float* out)> read;
};

// load(roles) from one reader: the stacked tensor allocated once (from `spares` when given and
// the device is the CPU) and each role read into its rows (no per-role copy to concatenate),
// then moved to `device`.
LoadRoles Stacked(RoleReader reader, const at::Device& device, WeightSpares* spares) {
  if (!device.is_cpu()) spares = nullptr;
  return [reader = std::move(reader), device, spares](const std::vector<TensorRole>& roles) {
    std::vector<std::int64_t> shape, rows;
    for (const TensorRole r : roles) {
      std::vector<std::int64_t> part = reader.shape(r);
      rows.push_back(part.front());
      if (shape.empty()) shape = std::move(part);
    }
    shape.front() = std::accumulate(rows.begin(), rows.end(), std::int64_t{0});
    at::Tensor t = spares != nullptr ? spares->Take(shape) : at::empty(shape, at::kFloat);
    const std::int64_t row_size = shape.front() > 0 ? t.numel() / shape.front() : 0;
    float* out = t.data_ptr<float>();
    for (std::size_t i = 0; i < roles.size(); ++i) {
      reader.read(roles[i], out);
      out += rows[i] * row_size;
    }
    return t.to(device);
  };
}

// A whole, contiguous float32 CPU buffer that nothing but `t` (one reference) refers to.
bool Reusable(const at::Tensor& t) {
  return t.defined() && t.device().is_cpu() && t.scalar_type() == at::kFloat && t.is_contiguous() &&
         t.use_count() == 1 && t.storage().use_count() == 1 &&
         t.storage().nbytes() == static_cast<std::size_t>(t.numel()) * sizeof(float);
}

}  // namespace

void WeightSpares::Add(const at::Tensor& t) {
  if (Reusable(t)) spares_.push_back({t, false});
}

void WeightSpares::Age() {
  spares_.erase(
      std::remove_if(spares_.begin(), spares_.end(), [](const Spare& s) { return s.aged; }),
      spares_.end());
  for (Spare& s : spares_) s.aged = true;
}

void WeightSpares::Add(const LlamaLayerWeights& w) {
  for (const at::Tensor* t : {&w.attn_norm, &w.w_qkv, &w.b_qkv, &w.w_o, &w.b_o, &w.k_cache_proj,
                              &w.q_cache_proj, &w.q_norm, &w.k_norm, &w.attn_out_norm, &w.mlp_norm,
                              &w.mlp_out_norm, &w.w_gate_up, &w.b_gate_up, &w.w_down, &w.b_down}) {
    Add(*t);
  }
}

at::Tensor WeightSpares::Take(const std::vector<std::int64_t>& shape) {
  for (auto it = spares_.begin(); it != spares_.end(); ++it) {
    if (it->buffer.sizes().vec() != shape) continue;
    at::Tensor t = std::move(it->buffer);
    spares_.erase(it);
    return t;
  }
  return at::empty(shape, at::kFloat);
}

void LayerWeightCache::Retire() {
  layer = -1;
  if (entries.empty()) return;  // retired already
  spares.Age();
  for (auto& [key, entry] : entries) {
    spares.Add(entry.value);
    entry.value = at::Tensor();
  }
  entries.clear();
}

LlamaLayerWeights LoadLayerWeights(const Checkpoint& ck, std::int64_t layer, const at::Device& dev,
                                   WeightSpares* spares) {
  const int l = static_cast<int>(layer);
  RoleReader reader{[&ck, l](TensorRole r) {
                      return ck.Tensor({r, l}).entry->shape;
                    },
                    [&ck, l](TensorRole r, float* out) {
                      ck.tensors.ReadF32(ck.Tensor({r, l}).entry->name, out);
                    }};
  return AssembleLayer(ck.config, l, Stacked(std::move(reader), dev, spares));
}

LlamaLayerWeights LoadLayerWeights(const LayerWeightSource& source, const ModelConfig& config,
                                   std::int64_t layer, const at::Device& dev,
                                   LayerWeightCache* cache) {
  const int l = static_cast<int>(layer);
  auto checked = [&source, l](TensorRole r) {
    const std::string name = HfTensorName({r, l});
    if (!source.has(name)) Fail(name, "the converted layer has no such tensor");
    return name;
  };
  RoleReader reader{[&source, checked](TensorRole r) { return source.shape(checked(r)); },
                    [&source, checked](TensorRole r, float* out) { source.read(checked(r), out); }};
  const LoadRoles read =
      Stacked(std::move(reader), dev, cache != nullptr ? &cache->spares : nullptr);
  if (cache == nullptr || !source.generation) return AssembleLayer(config, l, read);
  if (cache->layer != l) {
    cache->Retire();
    cache->layer = l;
  }
  return AssembleLayer(config, l, [&](const std::vector<TensorRole>& roles) {
    std::string key;
    std::vector<std::uint64_t> generations;
    for (const TensorRole r : roles) {
      const std::string name = HfTensorName({r, l});
      key += name + ";";
      generations.push_back(source.generation(name));
    }
    auto& entry = cache->entries[key];
    if (!entry.value.defined() || entry.generations != generations) {
      cache->spares.Add(std::exchange(entry.value, at::Tensor()));  // the stale copy, as a spare
      entry.value = read(roles);
      entry.generations = std::move(generations);
    }
    return entry.value;
  });
}

std::shared_ptr<const LlamaLayerWeights> ReferenceModel::Impl::LayerWeights(
    std::int64_t l, WeightSpares* spares) const {
  if (streamed == nullptr) {  // resident: a non-owning handle
    return std::shared_ptr<const LlamaLayerWeights>(&layers.at(static_cast<std::size_t>(l)),
                                                    [](const LlamaLayerWeights*) {});
  }
  c10::InferenceMode inference;
  ReleaseLayerMemory();  // the previous layer's buffers (tensor_cache.h)
  return std::make_shared<const LlamaLayerWeights>(LoadLayerWeights(*streamed, l, device, spares));
}

at::Tensor ReferenceModel::Impl::Embed(const at::Tensor& tokens) const {
  const at::Tensor flat = tokens.reshape({-1});
  if (streamed == nullptr) return Scaled(at::embedding(embed, flat));
  const at::Tensor ids = flat.to(at::kCPU).contiguous();
  const std::int64_t* p = ids.data_ptr<std::int64_t>();
  const std::vector<std::int64_t> rows(p, p + ids.numel());
  at::Tensor out = at::empty({ids.numel(), config.hidden_size}, at::kFloat);
  streamed->tensors.ReadRowsF32(streamed->Tensor({TensorRole::kEmbedTokens}).entry->name, rows,
                                out.data_ptr<float>());
  return Scaled(out.to(device));
}

at::Tensor ReferenceModel::Impl::LmHead() const { return LmHeadRows(0, config.vocab_size); }

at::Tensor ReferenceModel::Impl::LmHeadRows(std::int64_t begin, std::int64_t count) const {
  if (streamed == nullptr) return lm_head.narrow(0, begin, count);
  c10::InferenceMode inference;
  const TensorRole role =
      config.tie_word_embeddings ? TensorRole::kEmbedTokens : TensorRole::kLmHead;
  std::vector<std::int64_t> rows(static_cast<std::size_t>(count));
  std::iota(rows.begin(), rows.end(), begin);
  at::Tensor out = at::empty({count, config.hidden_size}, at::kFloat);
  streamed->tensors.ReadRowsF32(streamed->Tensor({role}).entry->name, rows, out.data_ptr<float>());
  return out.to(device);
}

std::unique_ptr<ReferenceModel> ReferenceModel::Load(const Checkpoint& ck,
                                                     const RuntimeOptions& options) {
  // --threads N means N, OpenBLAS's pool included. 0 means every core, shared by the ranks on
  // this machine: LibTorch's own default is not that (1 thread on a 2-core machine here).
  const int threads = ThreadsPerRank(options.threads);
  at::set_num_threads(threads);
  SetBlasThreads(threads);
  auto impl = std::make_unique<Impl>();
  impl->config = ck.config;
  impl->device = ParseDevice(options.device);
  impl->use_cpu_kernels = options.fused_cpu_kernels && CpuHasAttentionKernels();
  if (options.lckv_iterations < 0)
    Fail("--lckv-iterations", "must be 0 (token by token) or positive");
  impl->lckv_iterations = options.lckv_iterations;
  impl->token_by_token = options.token_by_token;
  impl->hidden_state_budget_bytes = options.hidden_state_budget_bytes;
  impl->prefetch_layers = options.prefetch_layers;
  const at::Device dev = impl->device;

  c10::InferenceMode inference;
  impl->final_norm = LoadTensor(ck, {TensorRole::kFinalNorm}, dev) + ck.config.norm_offset;
  impl->embed_scale = EmbeddingScale(ck.config, ck.Tensor({TensorRole::kEmbedTokens}).entry->dtype);
  if (options.stream_layers && !impl->DecodesTokenByToken()) {
    impl->streamed = &ck;
  } else {
    impl->embed = LoadTensor(ck, {TensorRole::kEmbedTokens}, dev);
    impl->lm_head =
        ck.config.tie_word_embeddings ? impl->embed : LoadTensor(ck, {TensorRole::kLmHead}, dev);
    for (int l = 0; l < ck.config.num_hidden_layers; ++l)
      impl->layers.push_back(LoadLayerWeights(ck, l, dev));
  }
  return std::unique_ptr<ReferenceModel>(new ReferenceModel(std::move(impl)));
}

const ModelConfig& ReferenceModel::config() const { return impl_->config; }
std::string ReferenceModel::device() const { return impl_->device.str(); }

std::vector<float> ReferenceModel::Logits(const std::vector<std::int32_t>& ids,
                                          LayerObserver* observer,
                                          const KvCachePolicy* cache) const {
  const at::Tensor tokens = TokenTensor(ids, 1, impl_->config.vocab_size, impl_->device, "Logits");
  const at::Tensor logits = impl_->Forward(tokens, observer, cache).to(at::kCPU).contiguous();
  const float* p = logits.data_ptr<float>();
  return std::vector<float>(p, p + logits.numel());
}

void ReferenceModel::Observe(const std::vector<std::int32_t>& tokens, int batch,
                             LayerObserver& observer) const {
  impl_->HiddenStates(
      TokenTensor(tokens, batch, impl_->config.vocab_size, impl_->device, "Observe"), &observer);
}

ReferenceModel::Stepper::Stepper(const ReferenceModel& model,
                                 const std::vector<ObservedBatch>& batches)
    : state_(std::make_unique<State>()) {
  c10::InferenceMode inference;
  const Impl& m = model.impl();
  if (m.DecodesTokenByToken() || m.config.SharesKv())
    Fail("calibration", "layers that share K/V cannot be stepped");
  state_->model.device = m.device;
  state_->model.use_cpu_kernels = m.use_cpu_kernels;
  state_->hidden = HiddenStateStore(m.hidden_state_budget_bytes);
  for (const auto& b : batches) {
    state_->tokens.push_back(
        TokenTensor(b.tokens, b.windows, m.config.vocab_size, m.device, "Stepper"));
    state_->first_sequences.push_back(b.first_sequence);
    state_->hidden.Add(m.Embed(state_->tokens.back()));
  }
}

ReferenceModel::Stepper::~Stepper() = default;

std::size_t ReferenceModel::Stepper::slots() const {
  return DataParallelSlots(state_->model.device.is_cpu());
}

void ReferenceModel::ObserveSweep(const std::vector<ObservedBatch>& batches,
                                  const std::vector<LayerObserver*>& observers,
                                  const std::function<void(std::int64_t)>& after_layer) const {
  std::vector<at::Tensor> tokens;
  SweepOptions options;
  options.observers = observers;
  options.after_layer = after_layer;
  for (const auto& b : batches) {
    tokens.push_back(
        TokenTensor(b.tokens, b.windows, impl_->config.vocab_size, impl_->device, "ObserveSweep"));
    options.first_sequences.push_back(b.first_sequence);
  }
  impl_->SweepHiddenStates(tokens, options);
}

void ReferenceModel::FinalStates(
    const std::vector<ObservedBatch>& batches,
    const std::function<void(std::int64_t, const float*)>& each) const {
  std::vector<at::Tensor> tokens;
  for (const auto& b : batches) {
    tokens.push_back(
        TokenTensor(b.tokens, b.windows, impl_->config.vocab_size, impl_->device, "FinalStates"));
  }
  const HiddenStateStore x = impl_->SweepHiddenStates(tokens, SweepOptions());
  const std::int64_t D = impl_->config.hidden_size;
  for (std::size_t b = 0; b < batches.size(); ++b) {
    const at::Tensor rows = x.Get(b, at::kCPU).contiguous();
    const std::int64_t T = rows.size(0) / batches[b].windows;
    for (int w = 0; w < batches[b].windows; ++w)
      each(batches[b].first_sequence + w, rows.data_ptr<float>() + w * T * D);
  }
}

}  // namespace kvfold
