#include "converter/passes/gqa_passes.h"

#include <algorithm>
#include <optional>

#include "converter/passes/attention_io.h"
#include "converter/passes/gqa_fold.h"
#include "converter/passes/kv_head_allocation.h"
#include "converter/passes/output_refit.h"
#include "formats/error.h"
#include "formats/spec_syntax.h"
#include "formats/tensor_names.h"

namespace kvfold {
namespace {

// kv-heads: one count for every layer, a list with one per layer (each dividing that layer's
// current count), or auto (allocate, gqa-svd only): nullopt.
std::optional<std::vector<std::int64_t>> KvHeadTargets(const PassSpec& spec,
                                                       const ModelConfig& config) {
  if (spec.Get("kv-heads") == "auto") return std::nullopt;
  const std::vector<std::int64_t> items = spec.IntList("kv-heads");
  const auto layers = static_cast<std::size_t>(config.num_hidden_layers);
  if (items.size() != 1 && items.size() != layers) {
    Fail("--passes", spec.name + ": kv-heads lists " + std::to_string(items.size()) +
                         " counts for " + std::to_string(layers) + " layers (give one, or one " +
                         "per layer)");
  }
  std::vector<std::int64_t> out;
  for (std::size_t i = 0; i < std::max(items.size(), layers); ++i) {
    const std::int64_t kv = items[items.size() == 1 ? 0 : i];
    const std::string item = std::to_string(kv);
    if (kv <= 0) Fail("--passes", spec.name + ": kv-heads=" + item + " must be positive");
    const std::int64_t now = config.KvHeads(static_cast<std::int64_t>(i));
    if (now % kv != 0) {
      Fail("--passes", spec.name + ": kv-heads=" + item + " does not divide " +
                           (config.PerLayerKvHeads() ? "layer " + std::to_string(i) + "'s "
                                                     : std::string("the model's ")) +
                           std::to_string(now) + " KV heads (groups must be even)");
    }
    if (i < layers) out.push_back(kv);
  }
  return out;
}

bool Uniform(const std::vector<std::int64_t>& v) {
  return std::all_of(v.begin(), v.end(), [&](std::int64_t n) { return n == v.front(); });
}

nlohmann::ordered_json CountsJson(const std::vector<std::int64_t>& v) {
  if (Uniform(v)) return v.front();
  return v;
}

// Why no KV-head fold runs on a model `config` describes ("" when one can); `approximate`:
// gqa-svd qk-norm=approximate, which folds keys behind a per-head norm approximately.
std::string FoldUnsupported(const ModelConfig& config, bool approximate = false) {
  if (!config.qk_norm || approximate) return "";
  return "not supported on " + config.model_type +
         ": its per-head key RMSNorm (k_norm, before RoPE) is not linear, so no fold of k_proj "
         "can merge key heads exactly (gqa-svd qk-norm=approximate folds approximately; "
         "kv-scales, kv-mixed and cache policies do apply)";
}

// Layer `layer` as it stands: a model a fold applies to, vanilla keys, and a KV head count the
// target divides.
void RequireFoldable(const ModelDraft& model, int layer, std::int64_t target,
                     const std::string& pass, bool approximate = false) {
  const std::string why = FoldUnsupported(model.config, approximate);
  if (!why.empty()) Fail("--passes", pass + ": " + why);
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
  explicit GqaMeanpool(std::vector<std::int64_t> kv) : kv_(std::move(kv)) {}
  bool ChangesKv() const override { return true; }
  std::int64_t KvHeadsAfter() const override { return Uniform(kv_) ? kv_.front() : 0; }
  unsigned NeededStatistics() const override { return 0; }
  std::string Unsupported(const ModelConfig& config) const override {
    return FoldUnsupported(config);
  }
  void RunLayer(LayerPassContext& ctx) override {
    const std::int64_t kv = kv_[static_cast<std::size_t>(ctx.layer)];
    RequireFoldable(ctx.model, ctx.layer, kv, "gqa-meanpool");
    AttentionProjections p = ReadAttention(ctx.model, ctx.layer);
    MeanPoolKv(p, kv);
    WriteAttention(ctx.model, ctx.layer, p);
  }
  void Finish(PassContext& ctx) override {
    ctx.record["kv_heads_before"] = CountsJson(ctx.model.config.KvHeadCounts());
    ctx.model.config.SetLayerKvHeads(kv_);
    ctx.record["kv_heads_after"] = CountsJson(kv_);
  }

 private:
  std::vector<std::int64_t> kv_;  // per layer
};

// gqa-svd's options besides the target KV heads.
struct GqaSvdOptions {
  std::string rope, weight, value_weight;
  bool approximate_norms = false;  // qk-norm=approximate
  std::int64_t kv_total = 0;       // kv-heads=auto: the KV heads of every layer together
  std::string deci_problem;        // why per-layer counts cannot be an hf output ("" if they can)
  bool refit_output = false;
  double ridge = -1;  // refit: the relative ridge, or -1 for auto (chosen on held-out windows)
};

class GqaSvd : public LayerPass {
 public:
  GqaSvd(std::vector<std::int64_t> kv, GqaSvdOptions o)
      : kv_(std::move(kv)),
        kv_total_(o.kv_total),
        deci_problem_(std::move(o.deci_problem)),
        rope_(std::move(o.rope)),
        weight_(std::move(o.weight)),
        value_weight_(std::move(o.value_weight)),
        approximate_norms_(o.approximate_norms),
        refit_output_(o.refit_output),
        ridge_(o.ridge) {}
  bool RefitsOutput() const override { return refit_output_; }
  void DisableRefit() override { refit_output_ = false; }
  std::string Unsupported(const ModelConfig& config) const override {
    return FoldUnsupported(config, approximate_norms_);
  }
  bool ChangesKv() const override { return true; }
  std::int64_t KvHeadsAfter() const override {
    return !kv_.empty() && Uniform(kv_) ? kv_.front() : 0;
  }
  unsigned NeededStatistics() const override {
    return kStatValue | (rope_ == "commute" ? kStatKeyPreRope : kStatKeyPostRope) |
           (weight_ == "query" ? kStatQueryEnergy : 0u);
  }
  unsigned AllocationStatistics() const override { return kv_total_ > 0 ? NeededStatistics() : 0; }
  // The layer's fold error at every count it could take (docs/gqa.md, "Per-layer KV heads").
  void MeasureLayer(const ModelDraft& model, int l, const LayerKvStatistics& stats) override {
    RequireFoldable(model, l, 1, "gqa-svd", approximate_norms_);
    const AttentionProjections source = ReadAttention(model, l);
    KvHeadCurve curve;
    for (std::int64_t k = 1; k <= source.kv_heads; ++k) {
      if (source.kv_heads % k != 0) continue;
      curve.heads.push_back(k);
      curve.error.push_back(k == source.kv_heads ? 0.0 : FoldError(source, k, stats));
    }
    curves_.push_back(std::move(curve));
  }
  void Allocate() override { kv_ = AllocateKvHeads(curves_, kv_total_); }
  // The config keeps the source's KV heads until Finish: every layer reads as the source.
  void RunLayer(LayerPassContext& ctx) override {
    ModelDraft& model = ctx.model;
    const int l = ctx.layer;
    const std::int64_t target = kv_.at(static_cast<std::size_t>(l));
    RequireFoldable(model, l, target, "gqa-svd", approximate_norms_);
    const std::int64_t kv_before = LayerKvHeads(model, l);
    if (ctx.statistics_kv_heads != kv_before) {
      Fail("--passes", "gqa-svd: calibration statistics describe the source model's " +
                           std::to_string(ctx.statistics_kv_heads) +
                           " KV heads; put gqa-svd before any other pass that changes KV heads");
    }
    const LayerKvStatistics& stats = ctx.statistics;
    AttentionProjections& p = layer_;
    ReadAttention(model, l, p, ctx.threads);
    if (refit_output_) source_wo_ = p.wo;  // the refit's target is the layer before the fold
    FoldRecord record;
    FoldValues(p, target, stats.value, record, value_weight_ == "output", ctx.threads);
    const std::vector<double>* query_energy = weight_ == "query" ? &stats.query_energy : nullptr;
    if (model.config.qk_norm) {
      FoldNormalizedKeys(p, target, stats.key_pre_rope, record, query_energy, HeadNormsOf(model, l),
                         ctx.threads);
    } else if (rope_ == "commute") {
      FoldKeysCommute(p, target, stats.key_pre_rope, record, query_energy, ctx.threads);
    } else {
      const KeyReconstruction r =
          ReconstructKeys(p, target, stats.key_post_rope, record, query_energy);
      const std::int64_t d = p.head_dim, t = kv_before / target;
      model.Replace({TensorRole::kKCacheProj, l}, {target, d, t * d},
                    std::vector<float>(r.k_cache_proj.begin(), r.k_cache_proj.end()));
      model.Replace({TensorRole::kQCacheProj, l}, {p.heads, d, d},
                    std::vector<float>(r.q_cache_proj.begin(), r.q_cache_proj.end()));
    }
    WriteAttention(model, l, p);
    layers_.push_back({{"layer", l},
                       {"kv_heads", target},
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
    ctx.record["kv_heads_before"] = CountsJson(model.config.KvHeadCounts());
    model.config.SetLayerKvHeads(kv_);
    if (rope_ == "reconstruct") model.config.key_projection_heads = kv_before;
    ctx.record["kv_heads_after"] = CountsJson(kv_);
    if (kv_total_ > 0) ctx.record["allocation"] = AllocationJson();
    ctx.record["rope"] = rope_;
    ctx.record["weight"] = weight_;
    ctx.record["value_weight"] = value_weight_;
    if (ctx.model.config.qk_norm) ctx.record["qk_norm"] = "approximate";
    ctx.record["refit"] = refit_output_ ? "o" : "none";
    ctx.record["vanilla_gqa"] = rope_ == "commute";
    ctx.record["layers"] = std::move(layers_);
  }
  std::string Unexportable(OutputFormat format) const override {
    if (format == OutputFormat::kHf && (kv_.empty() || !Uniform(kv_)) && !deci_problem_.empty())
      return "gqa-svd: " + deci_problem_;
    if (format != OutputFormat::kGguf || rope_ != "reconstruct") return "";
    return "gqa-svd rope=reconstruct compresses keys after RoPE, which llama.cpp cannot run: "
           "use rope=commute";
  }

 private:
  // Fraction of the layer's calibration energy the fold to k heads loses, keys and values
  // (each the mean over groups of 1 - energy kept, weighted as the fold weights it).
  double FoldError(const AttentionProjections& source, std::int64_t k,
                   const LayerKvStatistics& stats) const {
    // The kept energies alone (no folded weights): eigenvalues of the value blocks and the
    // commuting key fold's coefficients, as the fold to k heads would record them.
    FoldRecord r;
    r.value_energy_kept = ValueEnergyKept(source, k, stats.value, value_weight_ == "output");
    CommutingKeyFold(source, k, stats.key_pre_rope, r,
                     weight_ == "query" ? &stats.query_energy : nullptr);
    auto lost = [](const std::vector<double>& kept) {
      double sum = 0;
      for (double x : kept) sum += 1 - x;
      return sum / static_cast<double>(kept.size());
    };
    return lost(r.value_energy_kept) + lost(r.key_energy_kept);
  }
  nlohmann::ordered_json AllocationJson() const {
    nlohmann::ordered_json layers = nlohmann::ordered_json::array();
    for (std::size_t l = 0; l < curves_.size(); ++l) {
      layers.push_back(
          {{"layer", l}, {"heads", curves_[l].heads}, {"fold_error", curves_[l].error}});
    }
    return {{"kv_head_total", kv_total_}, {"measure", "fold energy lost"}, {"layers", layers}};
  }

  std::vector<std::int64_t> kv_;  // per layer; empty until Allocate with kv-heads=auto
  std::int64_t kv_total_;
  std::string deci_problem_;
  std::vector<KvHeadCurve> curves_;  // kv-heads=auto: per layer, from MeasureLayer
  std::string rope_;
  std::string weight_;
  std::string value_weight_;
  bool approximate_norms_;
  bool refit_output_;
  double ridge_;
  std::vector<double> source_wo_;  // refit: layer's o_proj before the fold, until RefitLayer
  AttentionProjections layer_;     // the layer RunLayer folds; its buffers serve every layer
  nlohmann::ordered_json layers_ = nlohmann::ordered_json::array();  // one entry per layer run
};

}  // namespace

std::unique_ptr<Pass> CreateGqaMeanpool(const PassSpec& spec, const ModelConfig& config) {
  auto kv = KvHeadTargets(spec, config);
  if (!kv) Fail("--passes", "gqa-meanpool: kv-heads=auto is gqa-svd's (it measures)");
  return std::make_unique<GqaMeanpool>(std::move(*kv));
}

std::unique_ptr<Pass> CreateGqaSvd(const PassSpec& spec, const ModelConfig& config) {
  GqaSvdOptions o;
  o.rope = spec.Get("rope");
  o.weight = spec.Get("weight");
  o.value_weight = spec.Get("value-weight");
  o.refit_output = spec.Get("refit") == "o";  // the default measured: docs/gqa.md
  o.approximate_norms = spec.Get("qk-norm") == "approximate";
  if (o.approximate_norms && o.rope != "commute")
    Fail("--passes", "gqa-svd: qk-norm=approximate folds with rope=commute");
  // The ridge is a parameter of the refit alone (the schema has it only with refit=o).
  if (spec.Has("ridge") && spec.Get("ridge") != "auto") {
    o.ridge = spec.Number("ridge");
    if (!(o.ridge >= 0))
      Fail("--passes", "gqa-svd: ridge must be auto or a number >= 0, not " + spec.Get("ridge"));
  }
  const auto targets = KvHeadTargets(spec, config);
  std::vector<std::int64_t> kv = targets.value_or(std::vector<std::int64_t>{});
  if (!targets) {
    o.kv_total = spec.Int("kv-head-total");
    if (o.kv_total <= 0 || o.kv_total > config.TotalKvHeads()) {
      Fail("--passes", "gqa-svd: kv-heads=auto needs kv-head-total=N, the KV heads of all " +
                           std::to_string(config.num_hidden_layers) + " layers together (at most " +
                           std::to_string(config.TotalKvHeads()) + ")");
    }
  }
  if (o.rope == "reconstruct" && (kv.empty() || !Uniform(kv)))
    Fail("--passes", "gqa-svd: rope=reconstruct needs one kv-heads count for every layer");
  o.deci_problem = DeciConfigProblem(config);
  return std::make_unique<GqaSvd>(std::move(kv), std::move(o));
}

}  // namespace kvfold
