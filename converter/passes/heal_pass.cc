#include "converter/passes/heal_pass.h"

#include <map>
#include <string>
#include <utility>

#include "converter/passes/attention_io.h"
#include "formats/error.h"
#include "formats/tensor_names.h"

namespace kvfold {
namespace {

[[noreturn]] void Refuse(const std::string& why) { Fail("--passes", "heal: " + why); }

HealSettings SettingsOf(const PassSpec& spec) {
  HealSettings s;
  const std::string target = spec.Get("target");
  s.target = target == "trajectory" ? HealTarget::kTrajectory
             : target == "logits"   ? HealTarget::kLogits
                                    : HealTarget::kLayer;
  s.windows = spec.Int("windows");
  s.steps = spec.Int("steps");
  s.lr = spec.Number("lr");
  s.batch = spec.Int("batch");
  s.check_every = spec.Int("check-every");
  s.patience = spec.Int("patience");
  s.seed = static_cast<std::uint64_t>(spec.Int("seed"));
  s.rank = spec.Int("rank");
  if (s.windows < 2) Refuse("windows must be at least 2 (one is held out)");
  if (s.steps < 1 || s.batch < 1 || s.check_every < 1 || s.patience < 1)
    Refuse("steps, batch, check-every and patience must be at least 1");
  if (!(s.lr > 0 && s.lr <= 1)) Refuse("lr must be in (0, 1]");
  if (spec.Int("seed") < 0) Refuse("seed must not be negative");
  if (s.rank < 0) Refuse("rank must not be negative (0: whole matrices)");
  return s;
}

// target=logits holds the source's layers above the healed one and its LM head in float32 on
// the device: models whose layers and LM head take at most this much.
constexpr double kLogitsModelBytes = 1024.0 * 1024 * 1024;

// The float32 bytes of every tensor the checkpoint holds but its input embedding (the LM head
// when the two are tied): every layer, the final norm and the LM head.
double ModelBytes(const ModelConfig& c) {
  double n = 0;
  for (const TensorId& id : RequiredTensors(c)) {
    if (id.role == TensorRole::kEmbedTokens && !c.tie_word_embeddings) continue;
    double size = 1;
    for (const std::int64_t extent : ExpectedShape(id, c)) size *= static_cast<double>(extent);
    n += size;
  }
  return 4 * n;
}

class HealPass : public LayerPass {
 public:
  explicit HealPass(HealSettings settings) : settings_(settings) {}
  unsigned NeededStatistics() const override { return 0; }
  bool ChangesKv() const override { return true; }
  const HealSettings* Heals() const override { return &settings_; }
  std::string Unsupported(const ModelConfig& config) const override {
    if (config.sandwich_norms && settings_.target == HealTarget::kTrajectory)
      return "target=trajectory: Gemma's residual adds the normed attention output, which that "
             "target does not model (use target=layer)";
    if (settings_.target == HealTarget::kLogits && ModelBytes(config) > kLogitsModelBytes) {
      return "target=logits holds the source's layers and LM head in float32, at most 1 GiB of "
             "them; this model's take " +
             std::to_string(static_cast<long long>(ModelBytes(config) / (1 << 20))) +
             " MiB (use target=layer)";
    }
    if (config.o_bias) return "an o_proj bias is not supported";
    return "";
  }

  void RunLayer(LayerPassContext& ctx) override {
    if (ctx.heal == nullptr) {
      Refuse(
          "trains on the converted layers' own hidden states: it needs the converted sweep "
          "(--calibrate-on converted, the default, and only layer-local passes)");
    }
    AttentionProjections p = ReadAttention(ctx.model, ctx.layer);
    const HealOutcome r = (*ctx.heal)(p, settings_);
    if (r.best_step > 0) WriteAttention(ctx.model, ctx.layer, p);
    layers_.push_back({{"layer", ctx.layer},
                       {"steps", r.steps},
                       {"kept_step", r.best_step},
                       {"fit_error_before", r.fit_before},
                       {"fit_error_after", r.fit_after},
                       {"held_out_error_before", r.held_out_before},
                       {"held_out_error_after", r.held_out_after}});
  }

  void Finish(PassContext& ctx) override {
    static const std::map<HealTarget, const char*> kTargets = {
        {HealTarget::kLayer, "the source layer's attention output on the converted hidden states"},
        {HealTarget::kTrajectory, "the source model's residual stream after attention"},
        {HealTarget::kLogits,
         "the source model's next-token distributions, through the source layers above (KL)"}};
    ctx.record["target"] = kTargets.at(settings_.target);
    ctx.record["layers"] = std::move(layers_);
  }

 private:
  HealSettings settings_;
  nlohmann::ordered_json layers_ = nlohmann::ordered_json::array();
};

}  // namespace

std::unique_ptr<Pass> CreateHeal(const PassSpec& spec, const ModelConfig&) {
  return std::make_unique<HealPass>(SettingsOf(spec));
}

}  // namespace kvfold
