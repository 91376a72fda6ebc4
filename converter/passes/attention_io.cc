#include "converter/passes/attention_io.h"

#include "converter/passes/parallel_items.h"
#include "formats/error.h"
#include "formats/tensor_names.h"

namespace kvfold {
namespace {

// [rows, hidden] weight plus optional [rows] bias -> `out` as [rows, hidden + bias] doubles.
// `out` keeps its capacity: at 2048 x 2048 a fresh buffer is a fresh mapping, which the kernel
// clears page by page (most of gqa-svd's time per layer, issue 27).
void WithBias(const std::vector<float>& w, const std::vector<float>* bias, std::int64_t rows,
              std::int64_t hidden, std::vector<double>& out) {
  const std::int64_t cols = hidden + (bias ? 1 : 0);
  out.resize(static_cast<std::size_t>(rows * cols));
  for (std::int64_t r = 0; r < rows; ++r) {
    for (std::int64_t c = 0; c < hidden; ++c) out[r * cols + c] = w[r * hidden + c];
    if (bias) out[r * cols + hidden] = (*bias)[r];
  }
}

void Split(ModelDraft& model, int layer, TensorRole weight, TensorRole bias,
           const std::vector<double>& m, std::int64_t rows, std::int64_t hidden, bool has_bias) {
  const std::int64_t cols = hidden + (has_bias ? 1 : 0);
  std::vector<float> w(static_cast<std::size_t>(rows * hidden)), b(static_cast<std::size_t>(rows));
  for (std::int64_t r = 0; r < rows; ++r) {
    for (std::int64_t c = 0; c < hidden; ++c)
      w[r * hidden + c] = static_cast<float>(m[r * cols + c]);
    if (has_bias) b[r] = static_cast<float>(m[r * cols + hidden]);
  }
  model.Replace({weight, layer}, {rows, hidden}, std::move(w));
  if (has_bias) model.Replace({bias, layer}, {rows}, std::move(b));
}

}  // namespace

std::int64_t LayerKvHeads(const ModelDraft& model, int layer) {
  if (!model.Has({TensorRole::kVProj, layer}))  // it reads another layer's K/V (mlkv)
    return model.config.KvHeads(model.config.KvSourceOf(layer));
  return model.Shape({TensorRole::kVProj, layer}).front() / model.config.head_dim;
}

bool LayerReconstructsKeys(const ModelDraft& model, int layer) {
  return model.config.key_projection_heads > 0 || model.Has({TensorRole::kKCacheProj, layer});
}

AttentionProjections ReadAttention(const ModelDraft& model, int layer) {
  AttentionProjections p;
  ReadAttention(model, layer, p);
  return p;
}

void ReadAttention(const ModelDraft& model, int layer, AttentionProjections& p, int threads) {
  const ModelConfig& c = model.config;
  if (c.o_bias) Fail(model.source().dir, "o_proj bias is not supported by KV-head compression");
  p.heads = c.num_attention_heads;
  p.kv_heads = LayerKvHeads(model, layer);
  p.head_dim = c.head_dim;
  p.hidden = c.hidden_size;
  p.has_bias = c.qkv_bias;
  // A layer reading another layer's K/V (mlkv) has no k/v projections: wk and wv stay empty.
  const bool kv = model.Has({TensorRole::kKProj, layer});
  if (!kv) {
    p.wk.clear();
    p.wv.clear();
  }
  const std::int64_t d = p.head_dim;
  // reconstruct mode keeps every source key head: k_proj's rows, not the KV heads'
  const std::int64_t k_rows = kv ? model.Shape({TensorRole::kKProj, layer}).front() : 0;
  auto read = [&](TensorRole weight, TensorRole bias, std::int64_t rows, std::vector<double>& out) {
    std::vector<float> b;
    if (p.has_bias) b = model.ReadF32({bias, layer});
    WithBias(model.ReadF32({weight, layer}), p.has_bias ? &b : nullptr, rows, p.hidden, out);
  };
  // Each projection read and widened into its own buffer: at the 7B shape this was a third of
  // gqa-svd's time on one thread.
  ParallelItems(kv ? 4 : 2, threads, [&](std::int64_t i) {
    if (i == 0) read(TensorRole::kQProj, TensorRole::kQBias, p.heads * d, p.wq);
    if (i == 1) {
      const std::vector<float> wo = model.ReadF32({TensorRole::kOProj, layer});
      p.wo.assign(wo.begin(), wo.end());
    }
    if (i == 2) read(TensorRole::kKProj, TensorRole::kKBias, k_rows, p.wk);
    if (i == 3) read(TensorRole::kVProj, TensorRole::kVBias, p.kv_heads * d, p.wv);
  });
}

HeadNorms HeadNormsOf(const ModelDraft& model, int layer) {
  const double offset = model.config.norm_offset ? 1.0 : 0.0;
  auto read = [&](TensorRole role) {
    std::vector<double> w;
    for (float x : model.ReadF32({role, layer})) w.push_back(x + offset);
    return w;
  };
  return {read(TensorRole::kQNorm), read(TensorRole::kKNorm)};
}

void WriteAttention(ModelDraft& model, int layer, const AttentionProjections& p) {
  const std::int64_t d = p.head_dim;
  const std::int64_t k_rows = static_cast<std::int64_t>(p.wk.size()) / p.in_cols();
  const std::int64_t v_rows = static_cast<std::int64_t>(p.wv.size()) / p.in_cols();
  Split(model, layer, TensorRole::kQProj, TensorRole::kQBias, p.wq, p.heads * d, p.hidden,
        p.has_bias);
  std::vector<float> wo(p.wo.begin(), p.wo.end());
  model.Replace({TensorRole::kOProj, layer}, {p.hidden, p.heads * d}, std::move(wo));
  if (p.wk.empty()) return;  // it reads another layer's K/V
  Split(model, layer, TensorRole::kKProj, TensorRole::kKBias, p.wk, k_rows, p.hidden, p.has_bias);
  Split(model, layer, TensorRole::kVProj, TensorRole::kVBias, p.wv, v_rows, p.hidden, p.has_bias);
}

}  // namespace kvfold
