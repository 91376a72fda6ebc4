#include "formats/stored_layout.h"

#include <cstring>

#include "formats/dtype.h"
#include "formats/error.h"

namespace kvfold {
namespace {

std::string LayerName(int layer, const char* rest) {
  return "model.layers." + std::to_string(layer) + "." + rest;
}

// Row order of a projection with `heads` heads: kvfold's row h d + c is stored row h d + order[c].
std::vector<std::int64_t> RowOrder(const std::vector<std::int64_t>& head_order,
                                   std::int64_t heads) {
  if (head_order.empty()) return {};
  const auto d = static_cast<std::int64_t>(head_order.size());
  std::vector<std::int64_t> rows;
  for (std::int64_t h = 0; h < heads; ++h)
    for (std::int64_t c : head_order) rows.push_back(h * d + c);
  return rows;
}

// Per-channel values of whole heads moved by the head order (formats/tensor_store.h's MoveRows,
// one float a row).
std::vector<float> MoveChannels(const ModelConfig& c, const std::vector<float>& values,
                                RowMove move) {
  const std::vector<std::int64_t> head = HeadChannelOrder(c);
  if (head.empty()) return values;
  const std::string moved = MoveRows(
      {reinterpret_cast<const char*>(values.data()), values.size() * sizeof(float)}, sizeof(float),
      RowOrder(head, static_cast<std::int64_t>(values.size() / head.size())), move);
  std::vector<float> out(values.size());
  std::memcpy(out.data(), moved.data(), moved.size());
  return out;
}

}  // namespace

std::vector<std::int64_t> HeadChannelOrder(const ModelConfig& c) {
  if (!c.PartialRotary()) return {};
  const std::int64_t half = c.head_dim / 2, r = c.RotaryDim() / 2, pass = half - r;
  std::vector<std::int64_t> order;
  for (std::int64_t j = 0; j < half; ++j) order.push_back(j < r ? j : 2 * r + (j - r));
  for (std::int64_t j = 0; j < half; ++j) order.push_back(j < r ? r + j : 2 * r + pass + (j - r));
  return order;
}

std::vector<float> ChannelsAsStored(const ModelConfig& c, const std::vector<float>& values) {
  return MoveChannels(c, values, RowMove::kScatter);
}

std::vector<float> ChannelsAsKvfold(const ModelConfig& c, const std::vector<float>& values) {
  return MoveChannels(c, values, RowMove::kGather);
}

std::string FusedQkvName(int layer) { return LayerName(layer, "self_attn.qkv_proj.weight"); }
std::string FusedGateUpName(int layer) { return LayerName(layer, "mlp.gate_up_proj.weight"); }

void MapStoredLayout(const ModelConfig& c, TensorStore& store) {
  const std::vector<std::int64_t> head = HeadChannelOrder(c);
  if (head.empty() && !c.fused_qkv && !c.fused_gate_up) return;
  if (!c.fused_qkv) Fail(store.origin(), "internal error: partial rotary outside a fused layout");
  for (int l = 0; l < c.num_hidden_layers; ++l) {
    auto missing = [&](const std::string& name) {
      if (store.Find(name) == nullptr) Fail(store.origin(), "missing " + name);
    };
    const ModelConfig layer = c.ForLayer(l);
    const std::int64_t d = c.head_dim, H = c.num_attention_heads, KV = layer.num_key_value_heads;
    const std::int64_t K = c.key_projection_heads > 0 ? c.key_projection_heads : KV;
    missing(FusedQkvName(l));
    store.SplitRows(FusedQkvName(l),
                    {{HfTensorName({TensorRole::kQProj, l}), 0, H * d, RowOrder(head, H)},
                     {HfTensorName({TensorRole::kKProj, l}), 0, K * d, RowOrder(head, K)},
                     {HfTensorName({TensorRole::kVProj, l}), 0, KV * d, {}}});
    if (!c.fused_gate_up) continue;
    missing(FusedGateUpName(l));
    const std::int64_t I = c.intermediate_size;
    store.SplitRows(FusedGateUpName(l), {{HfTensorName({TensorRole::kGateProj, l}), 0, I, {}},
                                         {HfTensorName({TensorRole::kUpProj, l}), 0, I, {}}});
  }
}

StoredLayoutWriter::StoredLayoutWriter(const ModelConfig& config, Emit emit)
    : config_(config), emit_(std::move(emit)), head_order_(HeadChannelOrder(config)) {}

void StoredLayoutWriter::Add(const std::optional<TensorId>& id, const TensorToWrite& t) {
  if (!id || (!config_.fused_qkv && !config_.fused_gate_up)) return emit_(t);
  const TensorRole r = id->role;
  if (config_.fused_qkv &&
      (r == TensorRole::kQBias || r == TensorRole::kKBias || r == TensorRole::kVBias)) {
    Fail(t.name, "a bias on a fused qkv_proj, which " + config_.model_type + " does not have");
  }
  std::string reordered;
  TensorToWrite part = t;
  if (!head_order_.empty() && (r == TensorRole::kQProj || r == TensorRole::kKProj)) {
    const std::int64_t heads = t.shape[0] / config_.head_dim;
    reordered = MoveRows(t.bytes, RowBytes(t.dtype, t.shape), RowOrder(head_order_, heads),
                         RowMove::kScatter);
    part.bytes = reordered;
  }
  if (config_.fused_qkv && r == TensorRole::kQProj)
    return AddPart(FusedQkvName(id->layer), 0, 3, part);
  if (config_.fused_qkv && r == TensorRole::kKProj)
    return AddPart(FusedQkvName(id->layer), 1, 3, part);
  if (config_.fused_qkv && r == TensorRole::kVProj)
    return AddPart(FusedQkvName(id->layer), 2, 3, part);
  if (config_.fused_gate_up && r == TensorRole::kGateProj)
    return AddPart(FusedGateUpName(id->layer), 0, 2, part);
  if (config_.fused_gate_up && r == TensorRole::kUpProj)
    return AddPart(FusedGateUpName(id->layer), 1, 2, part);
  emit_(part);
}

void StoredLayoutWriter::AddPart(const std::string& fused, std::size_t index, std::size_t count,
                                 const TensorToWrite& t) {
  std::vector<std::optional<Part>>& waiting = pending_[fused];
  waiting.resize(count);
  waiting[index] = Part{t.dtype, t.shape, std::string(t.bytes)};
  for (const auto& p : waiting)
    if (!p) return;
  const std::vector<std::optional<Part>> parts = std::move(waiting);
  pending_.erase(fused);
  std::vector<std::int64_t> shape = parts[0]->shape;
  std::string bytes;
  for (std::size_t i = 0; i < count; ++i) {
    if (parts[i]->dtype != parts[0]->dtype || parts[i]->shape.size() != shape.size() ||
        (shape.size() == 2 && parts[i]->shape[1] != shape[1]))
      Fail(fused, "its parts differ in dtype or width and cannot be stored fused");
    if (i > 0) shape[0] += parts[i]->shape[0];
    bytes += parts[i]->bytes;
  }
  emit_(TensorToWrite{fused, parts[0]->dtype, shape, bytes});
}

void StoredLayoutWriter::Finish() const {
  if (!pending_.empty())
    Fail(pending_.begin()->first, "internal error: written without all of its parts");
}

}  // namespace kvfold
