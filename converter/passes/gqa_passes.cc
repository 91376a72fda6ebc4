#include "converter/passes/gqa_passes.h"

#include "converter/passes/attention_io.h"
#include "converter/passes/gqa_fold.h"
#include "formats/error.h"
#include "formats/tensor_names.h"

namespace kvfold {
namespace {

std::int64_t TargetKvHeads(const PassSpec& spec, const ModelConfig& config) {
  const std::int64_t kv = IntParam(spec, "kv-heads", -1);
  if (kv <= 0) Fail("--passes", spec.name + ": kv-heads=N is required and must be positive");
  if (config.num_key_value_heads % kv != 0) {
    Fail("--passes", spec.name + ": kv-heads=" + std::to_string(kv) + " does not divide the model's " +
                         std::to_string(config.num_key_value_heads) +
                         " KV heads (groups must be even)");
  }
  return kv;
}

// Layer `layer` as it stands: vanilla keys, and a KV head count the target divides.
void RequireFoldable(const ModelDraft& model, int layer, std::int64_t target, const std::string& pass) {
  if (model.config.qk_norm) {
    Fail("--passes", pass + ": not supported on " + model.config.model_type + ": its per-head key RMSNorm (k_norm, "
                     "before RoPE) is not linear, so no fold of k_proj can merge key heads exactly (kv-scales, "
                     "kv-mixed and cache policies do apply)");
  }
  if (LayerReconstructsKeys(model, layer)) Fail("--passes", pass + ": the model already uses reconstruct-mode keys");
  const std::int64_t kv = LayerKvHeads(model, layer);
  if (kv % target != 0) {
    Fail("--passes", pass + ": kv-heads=" + std::to_string(target) + " does not divide the " + std::to_string(kv) +
                         " KV heads an earlier pass left");
  }
}

class GqaMeanpool : public LayerPass {
 public:
  explicit GqaMeanpool(std::int64_t kv) : kv_(kv) {}
  bool ChangesKv() const override { return true; }
  std::int64_t KvHeadsAfter() const override { return kv_; }
  unsigned NeededStatistics() const override { return 0; }
  void RunLayer(LayerPassContext& ctx) override {
    RequireFoldable(ctx.model, ctx.layer, kv_, "gqa-meanpool");
    AttentionProjections p = ReadAttention(ctx.model, ctx.layer);
    MeanPoolKv(p, kv_);
    WriteAttention(ctx.model, ctx.layer, p);
  }
  void Finish(PassContext& ctx) override {
    ctx.record["kv_heads_before"] = ctx.model.config.num_key_value_heads;
    ctx.model.config.num_key_value_heads = kv_;
    ctx.record["kv_heads_after"] = kv_;
  }

 private:
  std::int64_t kv_;
};

class GqaSvd : public LayerPass {
 public:
  GqaSvd(std::int64_t kv, std::string rope, std::string weight, std::string value_weight)
      : kv_(kv), rope_(std::move(rope)), weight_(std::move(weight)), value_weight_(std::move(value_weight)) {}
  bool ChangesKv() const override { return true; }
  std::int64_t KvHeadsAfter() const override { return kv_; }
  unsigned NeededStatistics() const override {
    return kStatValue | (rope_ == "commute" ? kStatKeyPreRope : kStatKeyPostRope) |
           (weight_ == "query" ? kStatQueryEnergy : 0u);
  }
  // The config keeps the source's KV heads until Finish: every layer reads as the source.
  void RunLayer(LayerPassContext& ctx) override {
    ModelDraft& model = ctx.model;
    const int l = ctx.layer;
    RequireFoldable(model, l, kv_, "gqa-svd");
    const std::int64_t kv_before = LayerKvHeads(model, l);
    if (ctx.statistics_kv_heads != kv_before) {
      Fail("--passes", "gqa-svd: calibration statistics describe the source model's " +
                           std::to_string(ctx.statistics_kv_heads) +
                           " KV heads; put gqa-svd before any other pass that changes KV heads");
    }
    const LayerKvStatistics& stats = ctx.statistics;
    AttentionProjections p = ReadAttention(model, l);
    FoldRecord record;
    FoldValues(p, kv_, stats.value, record, value_weight_ == "output");
    const std::vector<double>* query_energy = weight_ == "query" ? &stats.query_energy : nullptr;
    if (rope_ == "commute") {
      FoldKeysCommute(p, kv_, stats.key_pre_rope, record, query_energy);
    } else {
      const KeyReconstruction r = ReconstructKeys(p, kv_, stats.key_post_rope, record, query_energy);
      const std::int64_t d = p.head_dim, t = kv_before / kv_;
      model.Replace(HfTensorName({TensorRole::kKCacheProj, l}), {kv_, d, t * d},
                    std::vector<float>(r.k_cache_proj.begin(), r.k_cache_proj.end()));
      model.Replace(HfTensorName({TensorRole::kQCacheProj, l}), {p.heads, d, d},
                    std::vector<float>(r.q_cache_proj.begin(), r.q_cache_proj.end()));
    }
    WriteAttention(model, l, p);
    layers_.push_back({{"layer", l},
                       {"value_energy_kept", record.value_energy_kept},
                       {"key_energy_kept", record.key_energy_kept}});
  }
  void Finish(PassContext& ctx) override {
    ModelDraft& model = ctx.model;
    const std::int64_t kv_before = model.config.num_key_value_heads;
    model.config.num_key_value_heads = kv_;
    if (rope_ == "reconstruct") model.config.key_projection_heads = kv_before;
    ctx.record["kv_heads_before"] = kv_before;
    ctx.record["kv_heads_after"] = kv_;
    ctx.record["rope"] = rope_;
    ctx.record["weight"] = weight_;
    ctx.record["value_weight"] = value_weight_;
    ctx.record["vanilla_gqa"] = rope_ == "commute";
    ctx.record["layers"] = std::move(layers_);
  }

 private:
  std::int64_t kv_;
  std::string rope_;
  std::string weight_;
  std::string value_weight_;
  nlohmann::ordered_json layers_ = nlohmann::ordered_json::array();  // one entry per layer run
};

}  // namespace

std::unique_ptr<Pass> CreateGqaMeanpool(const PassSpec& spec, const ModelConfig& config) {
  return std::make_unique<GqaMeanpool>(TargetKvHeads(spec, config));
}

std::unique_ptr<Pass> CreateGqaSvd(const PassSpec& spec, const ModelConfig& config) {
  return std::make_unique<GqaSvd>(TargetKvHeads(spec, config),
                                  StringParam(spec, "rope", "commute", {"commute", "reconstruct"}),
                                  StringParam(spec, "weight", "query", {"none", "query"}),
                                  StringParam(spec, "value-weight", "none", {"none", "output"}));
}

}  // namespace kvfold
