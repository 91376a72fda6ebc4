#include "converter/passes/cross_layer_passes.h"

#include <cmath>

#include "converter/passes/attention_io.h"
#include "converter/passes/cross_layer_fold.h"
#include "formats/error.h"
#include "formats/tensor_names.h"

namespace kvfold {
namespace {

bool IsIdentity(const std::vector<std::int64_t>& layout) {
  for (std::size_t l = 0; l < layout.size(); ++l) {
    if (layout[l] != static_cast<std::int64_t>(l)) return false;
  }
  return true;
}

// Either pass: one group per source layer; each group's source K/V by the chosen init.
class CrossLayerShare : public Pass {
 public:
  std::string Unexportable(OutputFormat format) const override {
    if (format != OutputFormat::kGguf) return "";
    return "layers sharing K/V (mlkv, lckv) cannot run in llama.cpp: write an hf output for "
           "kvfold's runtime";
  }
  std::string Unsupported(const ModelConfig& c) const override {
    const std::string per_layer = NonUniformKvHeads(c, "layers that share K/V need");
    if (!per_layer.empty()) return per_layer;
    if (c.qk_norm) {
      return "not supported on " + c.model_type +
             ": a layer's per-head key RMSNorm (k_norm) is its own; sharing another layer's K/V "
             "would drop it (and the output would be lckv-llama)";
    }
    if (c.model_type != "llama" || c.sliding_window > 0)
      return "needs a llama model without sliding window (the output is lckv-llama)";
    if (c.key_projection_heads > 0) return "the model already uses reconstruct-mode keys";
    if (c.SharesKv()) return "the model's layers already share K/V";
    return "";
  }

 public:
  CrossLayerShare(std::string name, std::vector<std::int64_t> layout, std::string init,
                  MeanRule mean_rule)
      : name_(std::move(name)),
        layout_(std::move(layout)),
        init_(std::move(init)),
        mean_rule_(mean_rule) {}

  bool ChangesKv() const override { return true; }
  std::vector<std::int64_t> KvLayoutAfter() const override { return layout_; }
  unsigned NeededStatistics() const override { return init_ == "calib" ? kStatLayerInputs : 0u; }
  std::vector<LayerPair> InputPairs() const override {
    std::vector<LayerPair> pairs;
    if (init_ != "calib") return pairs;
    for (std::size_t l = 0; l < layout_.size(); ++l) {
      pairs.push_back({static_cast<int>(layout_[l]), static_cast<int>(l)});
      pairs.push_back({static_cast<int>(l), static_cast<int>(l)});
    }
    return pairs;
  }

  void Run(PassContext& ctx) override {
    ModelDraft& model = ctx.model;
    const ModelConfig& c = model.config;
    RequireSupported(*this, name_, c);
    nlohmann::ordered_json groups = nlohmann::ordered_json::array();
    for (std::int64_t source = 0; source < c.num_hidden_layers; ++source) {
      std::vector<int> layers;
      for (std::size_t l = 0; l < layout_.size(); ++l) {
        if (layout_[l] == source) layers.push_back(static_cast<int>(l));
      }
      if (layers.empty()) continue;
      groups.push_back(ShareGroup(ctx, static_cast<int>(source), layers));
    }
    ctx.record["layer_types"] = LayerTypesText(layout_);
    ctx.record["kv_layers_before"] = c.num_hidden_layers;
    model.config.kv_layer_of = IsIdentity(layout_) ? std::vector<std::int64_t>() : layout_;
    ctx.record["kv_layers_after"] = model.config.KvLayerCount();
    ctx.record["init"] = init_;
    ctx.record["groups"] = groups;
  }

 private:
  nlohmann::ordered_json ShareGroup(PassContext& ctx, int source, const std::vector<int>& layers) {
    ModelDraft& model = ctx.model;
    nlohmann::ordered_json record = {{"source", source}, {"layers", layers}};
    if (layers.size() == 1 && init_ == "mean") return record;  // nothing shared, nothing changes
    std::vector<AttentionProjections> p;
    std::size_t source_index = 0;
    for (int l : layers) {
      if (l == source) source_index = p.size();
      p.push_back(ReadAttention(model, l));
    }
    SharedKv shared;
    if (init_ == "mean") {
      std::vector<const AttentionProjections*> readers;
      for (const auto& x : p) readers.push_back(&x);
      shared = MeanSharedKv(readers, source_index, mean_rule_);
    } else {
      if (ctx.statistics.input_moments.empty())
        Fail("--passes", name_ + ": internal: input moments were not collected");
      std::vector<AttentionProjections*> readers;
      SharingMoments moments;
      moments.source = ctx.statistics.InputMoment(source, source);
      for (std::size_t i = 0; i < p.size(); ++i) {
        readers.push_back(&p[i]);
        moments.cross.push_back(ctx.statistics.InputMoment(source, layers[i]));
        moments.reader.push_back(ctx.statistics.InputMoment(layers[i], layers[i]));
      }
      SharingRecord fit;
      try {
        shared = FitSharedKv(readers, moments, fit);
      } catch (const Error& e) {
        Fail("--passes",
             name_ + " (init=calib), source layer " + std::to_string(source) + ": " + e.what());
      }
      record["key_energy_kept"] = fit.key_energy_kept;
      record["value_energy_kept"] = fit.value_energy_kept;
      record["ridge"] = fit.ridge;
    }
    for (std::size_t i = 0; i < p.size(); ++i) {
      const int l = layers[i];
      if (l == source) {
        p[i].wk = shared.wk;
        p[i].wv = shared.wv;
      }
      WriteAttention(model, l, p[i]);
      if (l != source) {  // reads the source's K/V: no projections of its own
        model.Remove({TensorRole::kKProj, l});
        model.Remove({TensorRole::kVProj, l});
        if (p[i].has_bias) {
          model.Remove({TensorRole::kKBias, l});
          model.Remove({TensorRole::kVBias, l});
        }
      }
    }
    return record;
  }

  std::string name_;
  std::vector<std::int64_t> layout_;
  std::string init_;
  MeanRule mean_rule_;
};

}  // namespace

std::vector<std::int64_t> MlkvLayout(std::int64_t layers, std::int64_t kv_layers) {
  std::vector<std::int64_t> sources = {0};
  for (std::int64_t i = 0; i + 1 < kv_layers; ++i) {  // Python: int((i + 1) * (L / N))
    sources.push_back(static_cast<std::int64_t>(
        std::floor(static_cast<double>(i + 1) *
                   (static_cast<double>(layers) / static_cast<double>(kv_layers)))));
  }
  std::vector<std::int64_t> layout(static_cast<std::size_t>(layers));
  for (std::int64_t l = 0; l < layers; ++l) {
    for (std::int64_t s : sources) {
      if (s <= l) layout[static_cast<std::size_t>(l)] = s;
    }
  }
  return layout;
}

std::vector<std::int64_t> LckvLayout(std::int64_t layers, std::int64_t warmup) {
  std::vector<std::int64_t> layout(static_cast<std::size_t>(layers));
  const std::int64_t bottom = warmup - warmup / 2, top = warmup / 2, target = layers - 1 - top;
  for (std::int64_t l = 0; l < layers; ++l) {
    const bool own = warmup >= layers || l < bottom || l > target;
    layout[static_cast<std::size_t>(l)] = own ? l : target;
  }
  return layout;
}

std::unique_ptr<Pass> CreateMlkv(const PassSpec& spec, const ModelConfig& config) {
  const std::int64_t L = config.num_hidden_layers;
  const std::int64_t n = spec.Int("kv-layers");
  if (n < 1 || n > L) {
    Fail("--passes",
         "mlkv: kv-layers=N must be between 1 and the model's " + std::to_string(L) + " layers");
  }
  return std::make_unique<CrossLayerShare>("mlkv", MlkvLayout(L, n), spec.Get("init"),
                                           MeanRule::kRunningPairwise);
}

std::unique_ptr<Pass> CreateLckv(const PassSpec& spec, const ModelConfig& config) {
  const std::int64_t L = config.num_hidden_layers;
  const std::int64_t w = spec.Int("warmup");
  if (w < 0 || w > L)
    Fail("--passes",
         "lckv: warmup=w must be between 0 and the model's " + std::to_string(L) + " layers");
  return std::make_unique<CrossLayerShare>("lckv", LckvLayout(L, w), spec.Get("init"),
                                           MeanRule::kUniform);
}

}  // namespace kvfold
