#include "runtime_check/reference_model.h"

#include <ATen/Parallel.h>
#include <c10/core/InferenceMode.h>

#include "formats/error.h"
#include "runtime_check/attention_cpu.h"
#include "runtime_check/llama_forward.h"

namespace kvfold {
namespace {

at::Tensor LoadTensor(const Checkpoint& ck, const TensorId& id, const at::Device& device) {
  const TensorRef& ref = ck.Tensor(id);
  at::Tensor t = at::empty(ref.entry->shape, at::kFloat);
  ck.tensors.ReadF32(ref.entry->name, t.data_ptr<float>());
  return t.to(device);
}

// The optional tensor `id`, or an undefined tensor when the config says it is absent.
at::Tensor LoadOptional(const Checkpoint& ck, bool present, const TensorId& id,
                        const at::Device& device) {
  return present ? LoadTensor(ck, id, device) : at::Tensor();
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

at::Tensor CatDefined(std::vector<at::Tensor> parts) {
  return parts.front().defined() ? at::cat(parts, 0) : at::Tensor();
}

}  // namespace

ReferenceModel::ReferenceModel(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
ReferenceModel::~ReferenceModel() = default;

LlamaLayerWeights LoadLayerWeights(const Checkpoint& ck, std::int64_t layer, const at::Device& dev) {
  const ModelConfig& c = ck.config;
  const int l = static_cast<int>(layer);
  auto load = [&](TensorRole r) { return LoadTensor(ck, {r, l}, dev); };
  auto maybe = [&](bool present, TensorRole r) { return LoadOptional(ck, present, {r, l}, dev); };
  LlamaLayerWeights w;
  w.attn_norm = load(TensorRole::kAttnNorm);
  if (c.ComputesKv(l)) {
    w.w_qkv = at::cat({load(TensorRole::kQProj), load(TensorRole::kKProj), load(TensorRole::kVProj)}, 0);
    w.b_qkv = CatDefined({maybe(c.qkv_bias, TensorRole::kQBias), maybe(c.qkv_bias, TensorRole::kKBias),
                          maybe(c.qkv_bias, TensorRole::kVBias)});
  } else {  // reads another layer's K/V: queries only
    w.w_qkv = load(TensorRole::kQProj);
    w.b_qkv = maybe(c.qkv_bias, TensorRole::kQBias);
  }
  w.w_o = load(TensorRole::kOProj);
  if (c.key_projection_heads > 0) {
    w.k_cache_proj = load(TensorRole::kKCacheProj);
    w.q_cache_proj = load(TensorRole::kQCacheProj);
  }
  w.b_o = maybe(c.o_bias, TensorRole::kOBias);
  w.mlp_norm = load(TensorRole::kMlpNorm);
  w.w_gate_up = at::cat({load(TensorRole::kGateProj), load(TensorRole::kUpProj)}, 0);
  w.b_gate_up = CatDefined({maybe(c.mlp_bias, TensorRole::kGateBias),
                            maybe(c.mlp_bias, TensorRole::kUpBias)});
  w.w_down = load(TensorRole::kDownProj);
  w.b_down = maybe(c.mlp_bias, TensorRole::kDownBias);
  return w;
}

std::shared_ptr<const LlamaLayerWeights> ReferenceModel::Impl::LayerWeights(std::int64_t l) const {
  if (streamed == nullptr) {  // resident: a non-owning handle
    return std::shared_ptr<const LlamaLayerWeights>(&layers.at(static_cast<std::size_t>(l)),
                                                    [](const LlamaLayerWeights*) {});
  }
  c10::InferenceMode inference;
  return std::make_shared<const LlamaLayerWeights>(LoadLayerWeights(*streamed, l, device));
}

at::Tensor ReferenceModel::Impl::Embed(const at::Tensor& tokens) const {
  const at::Tensor flat = tokens.reshape({-1});
  if (streamed == nullptr) return at::embedding(embed, flat);
  const at::Tensor ids = flat.to(at::kCPU).contiguous();
  const std::int64_t* p = ids.data_ptr<std::int64_t>();
  const std::vector<std::int64_t> rows(p, p + ids.numel());
  at::Tensor out = at::empty({ids.numel(), config.hidden_size}, at::kFloat);
  streamed->tensors.ReadRowsF32(streamed->Tensor({TensorRole::kEmbedTokens}).entry->name, rows, out.data_ptr<float>());
  return out.to(device);
}

at::Tensor ReferenceModel::Impl::LmHead() const {
  if (streamed == nullptr) return lm_head;
  c10::InferenceMode inference;
  return LoadTensor(*streamed, {config.tie_word_embeddings ? TensorRole::kEmbedTokens : TensorRole::kLmHead}, device);
}

std::unique_ptr<ReferenceModel> ReferenceModel::Load(const Checkpoint& ck,
                                                     const RuntimeOptions& options) {
  if (options.threads > 0) at::set_num_threads(options.threads);
  auto impl = std::make_unique<Impl>();
  impl->config = ck.config;
  impl->device = ParseDevice(options.device);
  impl->use_cpu_kernels = options.fused_cpu_kernels && CpuHasAttentionKernels();
  if (options.lckv_iterations < 0) Fail("--lckv-iterations", "must be 0 (token by token) or positive");
  impl->lckv_iterations = options.lckv_iterations;
  impl->token_by_token = options.token_by_token;
  const at::Device dev = impl->device;

  c10::InferenceMode inference;
  impl->final_norm = LoadTensor(ck, {TensorRole::kFinalNorm}, dev);
  if (options.stream_layers && !impl->DecodesTokenByToken()) {
    impl->streamed = &ck;
  } else {
    impl->embed = LoadTensor(ck, {TensorRole::kEmbedTokens}, dev);
    impl->lm_head = ck.config.tie_word_embeddings ? impl->embed : LoadTensor(ck, {TensorRole::kLmHead}, dev);
    for (int l = 0; l < ck.config.num_hidden_layers; ++l) impl->layers.push_back(LoadLayerWeights(ck, l, dev));
  }
  return std::unique_ptr<ReferenceModel>(new ReferenceModel(std::move(impl)));
}

const ModelConfig& ReferenceModel::config() const { return impl_->config; }
std::string ReferenceModel::device() const { return impl_->device.str(); }

std::vector<float> ReferenceModel::Logits(const std::vector<std::int32_t>& ids, LayerObserver* observer,
                                          const KvCachePolicy* cache) const {
  const at::Tensor tokens = TokenTensor(ids, 1, impl_->config.vocab_size, impl_->device, "Logits");
  const at::Tensor logits = impl_->Forward(tokens, observer, cache).to(at::kCPU).contiguous();
  const float* p = logits.data_ptr<float>();
  return std::vector<float>(p, p + logits.numel());
}

void ReferenceModel::Observe(const std::vector<std::int32_t>& tokens, int batch,
                             LayerObserver& observer) const {
  impl_->HiddenStates(TokenTensor(tokens, batch, impl_->config.vocab_size, impl_->device, "Observe"), &observer);
}

void ReferenceModel::ObserveSweep(const std::vector<ObservedBatch>& batches,
                                  const std::vector<LayerObserver*>& observers,
                                  const std::function<void(std::int64_t)>& after_layer) const {
  std::vector<at::Tensor> tokens;
  SweepOptions options;
  options.observers = observers;
  options.after_layer = after_layer;
  for (const auto& b : batches) {
    tokens.push_back(TokenTensor(b.tokens, b.windows, impl_->config.vocab_size, impl_->device, "ObserveSweep"));
    options.first_sequences.push_back(b.first_sequence);
  }
  impl_->SweepHiddenStates(tokens, options);
}

}  // namespace kvfold
