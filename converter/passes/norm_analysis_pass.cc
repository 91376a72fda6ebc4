#include "converter/passes/norm_analysis_pass.h"

#include <cstdio>

#include "formats/atomic_file.h"
#include "formats/error.h"

namespace kvfold {
namespace {

class NormAnalysis : public Pass {
 public:
  NormAnalysis(double budget, double max_alr_ratio)
      : budget_(budget), max_alr_ratio_(max_alr_ratio) {}
  unsigned NeededStatistics() const override { return kStatNormAttention; }
  bool DescribesKv() const override { return true; }
  std::string Unsupported(const ModelConfig& config) const override {
    return NonUniformKvHeads(config, "its eviction table holds");
  }
  std::string Unexportable(OutputFormat format) const override {
    if (format != OutputFormat::kGguf) return "";
    return "kv-norm-analysis writes an eviction table for kvfold's runtime, which llama.cpp does "
           "not read";
  }

  void Run(PassContext& ctx) override {
    const ModelConfig& c = ctx.model.config;
    if (c.key_projection_heads > 0 || c.num_key_value_heads != ctx.statistics.kv_heads) {
      Fail("--passes",
           "kv-norm-analysis: the statistics describe the source model's heads; run it alone");
    }
    const std::int64_t window =
        ctx.statistics.windows > 0 ? ctx.statistics.tokens / ctx.statistics.windows : 0;
    auto table = std::make_shared<EvictionTable>(
        BuildEvictionTable(ctx.statistics, budget_, max_alr_ratio_, window));
    ctx.model.AddOutputFile(kEvictionTableJson, [table](const std::string& path) {
      WriteFileAtomically(path, EvictionTableJson(*table));
    });
    ctx.model.AddOutputFile(kEvictionTableSafetensors, [table](const std::string& path) {
      WriteEvictionTableSafetensors(path, *table);
    });
    std::int64_t skipped = 0;
    double keep = 0, spearman = 0;
    for (const auto& h : table->heads) {
      skipped += h.skip ? 1 : 0;
      keep += h.keep;
      spearman += h.spearman;
    }
    const auto n = static_cast<double>(table->heads.size());
    ctx.record["table"] = kEvictionTableJson;
    ctx.record["rule"] = table->rule;
    ctx.record["heads"] = table->heads.size();
    ctx.record["heads_skipped"] = skipped;
    ctx.record["mean_keep"] = keep / n;
    ctx.record["mean_spearman"] = spearman / n;
    nlohmann::ordered_json layers = nlohmann::ordered_json::array();  // for the report
    for (std::int64_t l = 0; l < table->layers; ++l) {
      nlohmann::ordered_json rho = nlohmann::ordered_json::array(), ratio = rho, sink = rho,
                             keeps = rho, skips = rho;
      for (std::int64_t g = 0; g < table->kv_heads; ++g) {
        const EvictionTableHead& h = table->at(l, g);
        rho.push_back(h.spearman);
        ratio.push_back(h.alr_random > 0 ? h.alr / h.alr_random : 0.0);
        sink.push_back(h.sink_share);
        keeps.push_back(h.keep);
        skips.push_back(h.skip);
      }
      layers.push_back({{"layer", l},
                        {"spearman", rho},
                        {"alr_over_random", ratio},
                        {"sink_share", sink},
                        {"keep", keeps},
                        {"skip", skips}});
    }
    ctx.record["norm_layers"] = layers;
  }

 private:
  double budget_, max_alr_ratio_;
};

}  // namespace

EvictionTable BuildEvictionTable(const KvStatistics& s, double budget, double max_alr_ratio,
                                 std::int64_t window) {
  if (s.windows <= 0) Fail("kv-norm-analysis", "no calibration windows were measured");
  EvictionTable t;
  t.layers = static_cast<std::int64_t>(s.layers.size());
  t.kv_heads = s.kv_heads;
  t.windows = s.windows;
  t.window = window;
  t.budget = budget;
  char rule[256];
  std::snprintf(rule, sizeof rule,
                "skip when alr > %g * alr_random; else keep = smallest keep_grid ratio with "
                "attention_loss_l2 <= %g (1.0 when none)",
                max_alr_ratio, budget);
  t.rule = rule;
  for (int r = 0; r < kKeepGridSize; ++r) t.keep_grid.push_back(KeepGridRatio(r));
  const double inv = 1.0 / static_cast<double>(s.windows);
  for (const auto& layer : s.layers) {
    if (layer.norm_attention.size() != static_cast<std::size_t>(s.kv_heads)) {
      Fail("kv-norm-analysis", "internal: norm/attention statistics were not collected");
    }
    for (const HeadNormAttention& sum : layer.norm_attention) {
      EvictionTableHead h;
      h.spearman = sum.spearman * inv;
      h.alr = sum.alr * inv;
      h.alr_random = sum.alr_random * inv;
      h.sink_share = sum.sink_share * inv;
      h.skip = h.alr > max_alr_ratio * h.alr_random;
      h.keep = 1.0;
      for (int r = 0; r < kKeepGridSize && !h.skip; ++r) {
        if (sum.loss_l2[static_cast<std::size_t>(r)] * inv <= budget) {
          h.keep = KeepGridRatio(r);
          break;
        }
      }
      for (int r = 0; r < kKeepGridSize; ++r) {
        t.loss_l2.push_back(sum.loss_l2[static_cast<std::size_t>(r)] * inv);
        t.loss_ideal.push_back(sum.loss_ideal[static_cast<std::size_t>(r)] * inv);
      }
      t.heads.push_back(h);
    }
  }
  return t;
}

std::unique_ptr<Pass> CreateNormAnalysis(const PassSpec& spec, const ModelConfig&) {
  const double budget = spec.Number("budget");
  const double ratio = spec.Number("max-alr-ratio");
  if (!(budget > 0 && budget < 1)) Fail("--passes", "kv-norm-analysis: budget must be in (0, 1)");
  if (!(ratio > 0)) Fail("--passes", "kv-norm-analysis: max-alr-ratio must be positive");
  return std::make_unique<NormAnalysis>(budget, ratio);
}

}  // namespace kvfold
