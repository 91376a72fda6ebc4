#include "converter/passes/gqa_passes.h"

#include "converter/passes/attention_io.h"
#include "converter/passes/gqa_fold.h"
#include "converter/passes/output_refit.h"
#include "formats/error.h"
#include "formats/tensor_names.h"

namespace kvfold {
namespace {

std::int64_t TargetKvHeads(const PassSpec& spec, const ModelConfig& config) {
  const std::int64_t kv = IntParam(spec, "kv-heads", -1);
  if (kv <= 0) Fail("--passes", spec.name + ": kv-heads=N is required and must be positive");
  if (config.num_key_value_heads % kv != 0) {
    Fail("--passes",
         spec.name + ": kv-heads=" + std::to_string(kv) + " does not divide the model's " +
             std::to_string(config.num_key_value_heads) + " KV heads (groups must be even)");
  }
  return kv;
}

// Layer `layer` as it stands: vanilla keys, and a KV head count the target divides.
void RequireFoldable(const ModelDraft& model, int layer, std::int64_t target,
                     const std::string& pass) {
  if (model.config.qk_norm) {
    Fail("--passes", pass + ": not supported on " + model.config.model_type +
                         ": its per-head key RMSNorm (k_norm, "
                         "before RoPE) is not linear, so no fold of k_proj can merge key heads "
                         "exactly (kv-scales, "
                         "kv-mixed and cache policies do apply)");
  }
  if (LayerReconstructsKeys(model, layer))
    Fail("--passes", pass + ": the model already uses reconstruct-mode keys");
  const std::int64_t kv = LayerKvHeads(model, layer);
  if (kv % target != 0) {
    Fail("--passes", pass + ": kv-heads=" + std::to_string(target) + " does not divide the " +
                         std::to_string(kv) + " KV heads an earlier pass left");
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

// gqa-svd's options besides the target KV heads.
struct GqaSvdOptions {
  std::string rope, weight, value_weight;
  bool refit_output = false;
  double ridge = -1;  // refit: the relative ridge, or -1 for auto (chosen on held-out windows)
};

class GqaSvd : public LayerPass {
 public:
  GqaSvd(std::int64_t kv, GqaSvdOptions o)
      : kv_(kv),
        rope_(std::move(o.rope)),
        weight_(std::move(o.weight)),
        value_weight_(std::move(o.value_weight)),
        refit_output_(o.refit_output),
        ridge_(o.ridge) {}
  bool RefitsOutput() const override { return refit_output_; }
  void DisableRefit() override { refit_output_ = false; }
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
    if (refit_output_) source_wo_ = p.wo;  // the refit's target is the layer before the fold
    FoldRecord record;
    FoldValues(p, kv_, stats.value, record, value_weight_ == "output");
    const std::vector<double>* query_energy = weight_ == "query" ? &stats.query_energy : nullptr;
    if (rope_ == "commute") {
      FoldKeysCommute(p, kv_, stats.key_pre_rope, record, query_energy);
    } else {
      const KeyReconstruction r =
          ReconstructKeys(p, kv_, stats.key_post_rope, record, query_energy);
      const std::int64_t d = p.head_dim, t = kv_before / kv_;
      model.Replace({TensorRole::kKCacheProj, l}, {kv_, d, t * d},
                    std::vector<float>(r.k_cache_proj.begin(), r.k_cache_proj.end()));
      model.Replace({TensorRole::kQCacheProj, l}, {p.heads, d, d},
                    std::vector<float>(r.q_cache_proj.begin(), r.q_cache_proj.end()));
    }
    WriteAttention(model, l, p);
    layers_.push_back({{"layer", l},
                       {"value_energy_kept", record.value_energy_kept},
                       {"key_energy_kept", record.key_energy_kept}});
  }
  // o_proj refit to the layer's attention output before the fold (output_refit.h); layers_ has
  // this layer's entry.
  void RefitLayer(LayerPassContext& ctx, const OutputRefitMoments& moments) override {
    const TensorId o{TensorRole::kOProj, ctx.layer};
    const std::vector<float> wo = ctx.model.ReadF32(o);
    const std::int64_t hidden = ctx.model.config.hidden_size;
    const OutputRefit r =
        RefitOutput(source_wo_, std::vector<double>(wo.begin(), wo.end()), hidden, moments, ridge_);
    source_wo_.clear();
    if (r.ridge >= 0) {
      ctx.model.Replace(o, {hidden, moments.dim}, std::vector<float>(r.wo.begin(), r.wo.end()));
    }
    nlohmann::ordered_json tried = nlohmann::ordered_json::array();
    for (const auto& [ridge, error] : r.tried)
      tried.push_back({{"ridge", ridge}, {"held_out_error", error}});
    layers_.back()["refit"] = {
        {"ridge", r.ridge >= 0 ? nlohmann::ordered_json(r.ridge) : nlohmann::ordered_json("kept")},
        {"fit_error_before", r.fit_before},
        {"fit_error_after", r.fit_after},
        {"held_out_error_before", r.held_out_before},
        {"held_out_error_after", r.held_out_after},
        {"tried", std::move(tried)}};
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
    ctx.record["refit"] = refit_output_ ? "o" : "none";
    ctx.record["vanilla_gqa"] = rope_ == "commute";
    ctx.record["layers"] = std::move(layers_);
  }
  std::string Unexportable(OutputFormat format) const override {
    if (format != OutputFormat::kGguf || rope_ != "reconstruct") return "";
    return "gqa-svd rope=reconstruct compresses keys after RoPE, which llama.cpp cannot run: "
           "use rope=commute";
  }

 private:
  std::int64_t kv_;
  std::string rope_;
  std::string weight_;
  std::string value_weight_;
  bool refit_output_;
  double ridge_;
  std::vector<double> source_wo_;  // refit: layer's o_proj before the fold, until RefitLayer
  nlohmann::ordered_json layers_ = nlohmann::ordered_json::array();  // one entry per layer run
};

}  // namespace

std::unique_ptr<Pass> CreateGqaMeanpool(const PassSpec& spec, const ModelConfig& config) {
  return std::make_unique<GqaMeanpool>(TargetKvHeads(spec, config));
}

std::unique_ptr<Pass> CreateGqaSvd(const PassSpec& spec, const ModelConfig& config) {
  GqaSvdOptions o;
  o.rope = StringParam(spec, "rope", "commute", {"commute", "reconstruct"});
  o.weight = StringParam(spec, "weight", "query", {"none", "query"});
  o.value_weight = StringParam(spec, "value-weight", "none", {"none", "output"});
  o.refit_output = StringParam(spec, "refit", "o", {"none", "o"}) == "o";  // measured: docs/gqa.md
  // The ridge is a parameter of the refit alone: read (and recorded) only with refit=o.
  if (o.refit_output) {
    const std::string ridge = spec.params.count("ridge") ? spec.params.at("ridge") : "auto";
    if (ridge == "auto") {
      if (!spec.params.count("ridge")) spec.defaults_used["ridge"] = "auto";
    } else {
      o.ridge = DoubleParam(spec, "ridge", -1);
      if (!(o.ridge >= 0))
        Fail("--passes", "gqa-svd: ridge must be auto or a number >= 0, not " + ridge);
    }
  } else if (spec.params.count("ridge")) {
    Fail("--passes", "gqa-svd: ridge applies only with refit=o");
  }
  return std::make_unique<GqaSvd>(TargetKvHeads(spec, config), std::move(o));
}

}  // namespace kvfold
