#include "converter/passes/kv_quant_passes.h"

#include <algorithm>
#include <cmath>
#include <nlohmann/json.hpp>

#include "calib/quantizers.h"
#include "converter/passes/attention_io.h"
#include "formats/atomic_file.h"
#include "formats/dtype.h"
#include "formats/error.h"
#include "formats/kv_mixed_table.h"
#include "formats/stored_layout.h"

namespace kvfold {
namespace {

void RequirePlainKeys(const ModelDraft& model, int layer, const std::string& pass) {
  if (LayerReconstructsKeys(model, layer))
    Fail("--passes", pass + ": reconstruct-mode checkpoints are not supported");
}

// The statistics must describe the heads the layer has now.
void RequireSourceHeads(const ModelDraft& model, int layer, std::int64_t statistics_kv_heads,
                        const std::string& pass) {
  if (statistics_kv_heads != LayerKvHeads(model, layer)) {
    Fail("--passes", pass + ": calibration describes the source model's " +
                         std::to_string(statistics_kv_heads) + " KV heads; put " + pass +
                         " before any pass that changes KV heads");
  }
}

double OutlierRatio(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  const double median = v[v.size() / 2];
  return median > 0 ? v.back() / median : 0.0;
}

class KvScales : public LayerPass {
 public:
  explicit KvScales(bool per_head) : per_head_(per_head) {}
  std::string Unexportable(OutputFormat format) const override {
    if (format != OutputFormat::kGguf) return "";
    return "kv-scales writes vLLM's FP8 cache scales, which llama.cpp does not read: leave it out "
           "and choose llama.cpp's cache type (-ctk/-ctv)";
  }
  bool DescribesKv() const override { return true; }
  unsigned NeededStatistics() const override { return kStatKvRange; }
  void RunLayer(LayerPassContext& ctx) override {
    ModelDraft& model = ctx.model;
    RequirePlainKeys(model, ctx.layer, "kv-scales");
    RequireSourceHeads(model, ctx.layer, ctx.statistics_kv_heads, "kv-scales");
    const std::int64_t kv = LayerKvHeads(model, ctx.layer), d = model.config.head_dim;
    const std::vector<std::int64_t> shape =
        per_head_ ? std::vector<std::int64_t>{kv, 1, 1} : std::vector<std::int64_t>{1};
    const LayerKvStatistics& s = ctx.statistics;
    std::vector<float> k = Fp8Scales(s.key_min, s.key_max, kv, d, per_head_);
    std::vector<float> v = Fp8Scales(s.value_min, s.value_max, kv, d, per_head_);
    layers_.push_back({{"layer", ctx.layer}, {"k_scale", k}, {"v_scale", v}});
    model.Add({TensorRole::kKScale, ctx.layer}, shape, std::move(k), DType::kF32);
    model.Add({TensorRole::kVScale, ctx.layer}, shape, std::move(v), DType::kF32);
  }
  void Finish(PassContext& ctx) override {
    // compressed-tensors' config for a KV-cache-only scheme, as vLLM validates it: float, 8 bits,
    // static, symmetric, strategy tensor or attn_head.
    const nlohmann::ordered_json quantization = {
        {"quant_method", "compressed-tensors"},
        {"format", "dense"},
        {"quantization_status", "compressed"},
        {"config_groups", nlohmann::ordered_json::object()},
        {"ignore", nlohmann::ordered_json::array()},
        {"kv_cache_scheme",
         {{"num_bits", 8},
          {"type", "float"},
          {"strategy", per_head_ ? "attn_head" : "tensor"},
          {"dynamic", false},
          {"symmetric", true}}},
    };
    ctx.model.config.output_fields["quantization_config"] = quantization.dump();
    ctx.record["format"] = "vllm-fp8";
    ctx.record["strategy"] = per_head_ ? "attn_head" : "tensor";
    ctx.record["scales"] = std::move(layers_);
  }

 private:
  bool per_head_;
  nlohmann::ordered_json layers_ = nlohmann::ordered_json::array();
};

class KvBalance : public LayerPass {
 public:
  explicit KvBalance(double alpha) : alpha_(alpha) {}
  bool ChangesKv() const override { return true; }
  unsigned NeededStatistics() const override { return kStatQkPairMax; }
  std::string Unsupported(const ModelConfig& config) const override {
    if (!config.qk_norm) return "";
    return "not supported on " + config.model_type +
           ": keys pass a per-head RMSNorm after k_proj (which would undo the factors) whose "
           "weight all heads share";
  }
  void RunLayer(LayerPassContext& ctx) override {
    ModelDraft& model = ctx.model;
    RequirePlainKeys(model, ctx.layer, "kv-balance");
    RequireSupported(*this, "kv-balance", model.config);
    RequireSourceHeads(model, ctx.layer, ctx.statistics_kv_heads, "kv-balance");
    const ModelConfig& c = model.config;
    const LayerKvStatistics& s = ctx.statistics;
    // Every supported family applies RoPE: the two channels of a rotary pair share a factor.
    const std::vector<double> b =
        BalanceFactors(s.query_pair_max, s.key_pair_max, c.num_attention_heads,
                       LayerKvHeads(model, ctx.layer), c.head_dim, alpha_, true);
    AttentionProjections p = ReadAttention(model, ctx.layer);
    FoldBalance(p, b);
    WriteAttention(model, ctx.layer, p);
    double lo = b.front(), hi = b.front();
    for (double x : b) lo = std::min(lo, x), hi = std::max(hi, x);
    // Key outliers (largest over median rotary-pair maximum) before and after: what it buys.
    std::vector<double> before(s.key_pair_max.begin(), s.key_pair_max.end()), after = before;
    const std::int64_t half = c.head_dim / 2;
    for (std::size_t i = 0; i < after.size(); ++i) {
      after[i] *= b[static_cast<std::size_t>((static_cast<std::int64_t>(i) / half) * c.head_dim +
                                             static_cast<std::int64_t>(i) % half)];
    }
    layers_.push_back({{"layer", ctx.layer},
                       {"factor_min", lo},
                       {"factor_max", hi},
                       {"key_outlier_ratio_before", OutlierRatio(before)},
                       {"key_outlier_ratio_after", OutlierRatio(after)}});
  }
  void Finish(PassContext& ctx) override {
    ctx.record["alpha"] = alpha_;
    ctx.record["balance"] = std::move(layers_);
  }

 private:
  double alpha_;
  nlohmann::ordered_json layers_ = nlohmann::ordered_json::array();
};

class KvMixed : public LayerPass {
 public:
  explicit KvMixed(KvMixedTable settings) : settings_(std::move(settings)) {}
  std::string Unsupported(const ModelConfig& config) const override {
    return NonUniformKvHeads(config, "its table holds");
  }
  std::string Unexportable(OutputFormat format) const override {
    if (format != OutputFormat::kGguf) return "";
    return "kv-mixed writes a table for kvfold's runtime, which llama.cpp does not read: choose "
           "llama.cpp's cache type (-ctk/-ctv) instead";
  }
  bool DescribesKv() const override { return true; }
  unsigned NeededStatistics() const override { return kStatKvRange; }
  // Layers arrive in order: each adds its calibrated key ranges to the table.
  void RunLayer(LayerPassContext& ctx) override {
    ModelDraft& model = ctx.model;
    RequirePlainKeys(model, ctx.layer, "kv-mixed");
    RequireSourceHeads(model, ctx.layer, ctx.statistics_kv_heads, "kv-mixed");
    if (ctx.layer == 0) {
      table_ = std::make_shared<KvMixedTable>(settings_);
      for (int l : table_->protect) {
        if (l >= model.config.num_hidden_layers)
          Fail("--passes", "kv-mixed: protect layer " + std::to_string(l) + " does not exist");
      }
    }
    table_->kv_heads = ctx.statistics_kv_heads;
    const LayerKvStatistics& s = ctx.statistics;
    table_->key_min.insert(table_->key_min.end(), s.key_min.begin(), s.key_min.end());
    table_->key_max.insert(table_->key_max.end(), s.key_max.begin(), s.key_max.end());
  }
  void Finish(PassContext& ctx) override {
    ModelDraft& model = ctx.model;
    std::shared_ptr<KvMixedTable> table = table_;
    table->layers = model.config.num_hidden_layers;
    table->head_dim = model.config.head_dim;
    table->calibration_tokens = ctx.statistics.tokens;
    table->key_min = ChannelsAsStored(model.config, table->key_min);  // the checkpoint's channels
    table->key_max = ChannelsAsStored(model.config, table->key_max);
    model.AddOutputFile(kKvMixedJson, [table](const std::string& path) {
      WriteFileAtomically(path, KvMixedTableJson(*table));
    });
    model.AddOutputFile(kKvMixedSafetensors, [table](const std::string& path) {
      WriteKvMixedSafetensors(path, *table);
    });
    ctx.record["table"] = kKvMixedJson;
    ctx.record["keep"] = table->keep;
    ctx.record["key_bits"] = table->key_bits;
    ctx.record["value_bits"] = table->value_bits;
    ctx.record["key_axis"] = table->key_axis;
    ctx.record["protect"] = table->protect;
  }

 private:
  KvMixedTable settings_;
  std::shared_ptr<KvMixedTable> table_;  // filled layer by layer
};

}  // namespace

std::vector<float> Fp8Scales(const std::vector<float>& lo, const std::vector<float>& hi,
                             std::int64_t kv, std::int64_t d, bool per_head) {
  if (lo.size() != static_cast<std::size_t>(kv * d) || hi.size() != lo.size()) {
    Fail("kv-scales", "internal: calibration ranges were not collected");
  }
  std::vector<float> amax(static_cast<std::size_t>(kv), 0.0f);
  for (std::int64_t g = 0; g < kv; ++g) {
    for (std::int64_t c = 0; c < d; ++c) {
      const auto i = static_cast<std::size_t>(g * d + c);
      amax[static_cast<std::size_t>(g)] =
          std::max({amax[static_cast<std::size_t>(g)], std::abs(lo[i]), std::abs(hi[i])});
    }
  }
  if (!per_head) amax = {*std::max_element(amax.begin(), amax.end())};
  std::vector<float> scale;
  for (float a : amax) scale.push_back(a > 0 ? a / kFp8E4M3Max : 1.0f);
  return scale;
}

std::vector<double> BalanceFactors(const std::vector<float>& qmax, const std::vector<float>& kmax,
                                   std::int64_t heads, std::int64_t kv, std::int64_t d,
                                   double alpha, bool pairs) {
  const std::int64_t units = pairs ? d / 2 : d, group = heads / kv;
  if (qmax.size() != static_cast<std::size_t>(heads * units) ||
      kmax.size() != static_cast<std::size_t>(kv * units)) {
    Fail("kv-balance", "internal: query/key maxima were not collected");
  }
  std::vector<double> b(static_cast<std::size_t>(kv * d), 1.0);
  for (std::int64_t g = 0; g < kv; ++g) {
    for (std::int64_t u = 0; u < units; ++u) {
      double q = 0;
      for (std::int64_t h = g * group; h < (g + 1) * group; ++h)
        q = std::max(q, double(qmax[static_cast<std::size_t>(h * units + u)]));
      const double k = kmax[static_cast<std::size_t>(g * units + u)];
      // MiKV's balancer is sqrt(max|q| / max|k|); alpha generalises the square root: 0 leaves the
      // weights alone, 1 swaps the query and key maxima.
      const double f = q > 0 && k > 0 ? std::pow(q / k, alpha) : 1.0;
      b[static_cast<std::size_t>(g * d + u)] = f;
      if (pairs) b[static_cast<std::size_t>(g * d + u + d / 2)] = f;
    }
  }
  return b;
}

void FoldBalance(AttentionProjections& p, const std::vector<double>& b) {
  const std::int64_t d = p.head_dim, cols = p.in_cols(), group = p.heads / p.kv_heads;
  if (b.size() != static_cast<std::size_t>(p.kv_heads * d))
    Fail("kv-balance", "internal: factor count");
  for (std::int64_t g = 0; g < p.kv_heads; ++g) {
    for (std::int64_t c = 0; c < d; ++c) {
      const double f = b[static_cast<std::size_t>(g * d + c)];
      for (std::int64_t x = 0; x < cols; ++x)
        p.wk[static_cast<std::size_t>((g * d + c) * cols + x)] *= f;
      for (std::int64_t h = g * group; h < (g + 1) * group; ++h) {
        for (std::int64_t x = 0; x < cols; ++x)
          p.wq[static_cast<std::size_t>((h * d + c) * cols + x)] /= f;
      }
    }
  }
}

std::unique_ptr<Pass> CreateKvScales(const PassSpec& spec, const ModelConfig&) {
  return std::make_unique<KvScales>(spec.Get("strategy") == "head");
}

std::unique_ptr<Pass> CreateKvBalance(const PassSpec& spec, const ModelConfig&) {
  const double alpha = spec.Number("alpha");
  if (!(alpha >= 0 && alpha <= 1)) Fail("--passes", "kv-balance: alpha must be in [0, 1]");
  return std::make_unique<KvBalance>(alpha);
}

std::unique_ptr<Pass> CreateKvMixed(const PassSpec& spec, const ModelConfig& config) {
  KvMixedTable t;
  const std::int64_t key_bits = spec.Int("key-bits"), value_bits = spec.Int("value-bits");
  for (std::int64_t b : {key_bits, value_bits}) {
    if (b < 1 || b > 8) Fail("--passes", "kv-mixed: key/value bits must be in [1, 8]");
  }
  t.key_bits = static_cast<int>(key_bits);
  t.value_bits = static_cast<int>(value_bits);
  if (spec.Int("hi-bits") != 16) {
    Fail("--passes",
         "kv-mixed: hi-bits must be 16 (kvfold simulates unquantized important tokens)");
  }
  t.hi_bits = 16;
  t.keep = spec.Number("keep");
  t.recent = spec.Number("recent");
  t.key_axis = spec.Get("key-axis");
  t.value_axis = spec.Get("value-axis");
  t.group = spec.Int("group");
  for (std::int64_t l : spec.IntList("protect")) {
    if (l < 0 || l >= config.num_hidden_layers) {
      Fail("--passes", "kv-mixed: protect layer " + std::to_string(l) +
                           " does not exist (the model has layers 0.." +
                           std::to_string(config.num_hidden_layers - 1) + ")");
    }
    t.protect.push_back(static_cast<int>(l));
  }
  if (!(t.keep > 0 && t.keep <= 1) || !(t.recent >= 0 && t.recent <= 1))
    Fail("--passes", "kv-mixed: keep in (0, 1], recent in [0, 1]");
  if (t.group < 0 || t.group > config.head_dim)
    Fail("--passes", "kv-mixed: group must be in [0, head_dim]");
  return std::make_unique<KvMixed>(t);
}

}  // namespace kvfold
