#include "runtime_check/kv_quant.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <sstream>

#include "calib/quantizers.h"
#include "formats/error.h"
#include "runtime_check/spec_text.h"

namespace kvfold {
namespace {

constexpr const char* kWhere = "--kv-cache";

struct SchemeName {
  QuantScheme scheme;
  const char* name;
};
constexpr SchemeName kSchemes[] = {{QuantScheme::kRtn, "rtn"},
                                   {QuantScheme::kKivi, "kivi"},
                                   {QuantScheme::kFp8, "fp8"},
                                   {QuantScheme::kMikv, "mikv"},
                                   {QuantScheme::kGgml, "ggml"}};

const char* SchemeText(QuantScheme s) {
  for (const auto& n : kSchemes) {
    if (n.scheme == s) return n.name;
  }
  return "?";
}

// Copies head g's keys and values of batch row b into the stored copies ([T, d] each).
void CopyHead(const float* qkv, const QkvLayout& L, std::int64_t b, std::int64_t g,
              const HeadCacheOut& out) {
  const std::int64_t T = L.tokens, d = L.head_dim;
  for (std::int64_t t = 0; t < T; ++t) {
    const float* r = qkv + (b * T + t) * L.row();
    std::memcpy(out.keys + t * d, r + (L.heads + g) * d,
                sizeof(float) * static_cast<std::size_t>(d));
    std::memcpy(out.values + t * d, r + (L.heads + L.kv_heads + g) * d,
                sizeof(float) * static_cast<std::size_t>(d));
  }
}

// Per-token asymmetric groups of `group` channels over [T, d] rows.
void QuantizePerToken(float* x, std::int64_t T, std::int64_t d, std::int64_t group, int bits) {
  for (std::int64_t t = 0; t < T; ++t) {
    for (std::int64_t c = 0; c < d; c += group)
      FakeQuantAsymmetric(x + t * d + c, std::min(group, d - c), 1, bits);
  }
}

void FillCausal(std::uint8_t* codes, std::int64_t T, std::uint8_t code) {
  for (std::int64_t i = 0; i < T; ++i) {
    for (std::int64_t j = 0; j < T; ++j)
      codes[i * T + j] = j <= i ? code : std::uint8_t{kCacheHidden};
  }
}

}  // namespace

std::string QuantSpec::Text() const {
  std::ostringstream o;
  if (scheme == QuantScheme::kGgml) {
    o << "ggml<k=" << GgmlCacheTypeName(key_type) << ",v=" << GgmlCacheTypeName(value_type);
  } else {
    o << "quant<scheme=" << SchemeText(scheme);
  }
  if (scheme != QuantScheme::kFp8 && scheme != QuantScheme::kGgml) {
    o << ",key-bits=" << key_bits << ",value-bits=" << value_bits;
    if (group > 0) o << ",group=" << group;
  }
  if (scheme == QuantScheme::kKivi) o << ",block=" << block;
  if (scheme == QuantScheme::kMikv) {
    o << ",keep=" << keep << ",recent=" << recent << ",hi-bits=" << hi_bits
      << ",key-axis=" << (key_channel ? "channel" : "token");
  }
  if (!protect.empty()) {
    o << ",protect=";
    for (std::size_t i = 0; i < protect.size(); ++i) o << (i ? "," : "") << protect[i];
  }
  if (!table.empty()) o << ",table=" << table;
  return o.str() + ">";
}

GgmlCacheType GgmlType(const std::string& key, const std::string& value) {
  if (const auto t = ParseGgmlCacheType(value)) return *t;
  Fail(kWhere, key + "=" + value + " is not one of f16|bf16|q8_0|q5_1|q5_0|q4_1|q4_0|iq4_nl");
}

QuantSpec ParseQuantSpec(const std::string& text) {
  QuantSpec s;
  const bool ggml = text.rfind("ggml<", 0) == 0;
  if (ggml) s.scheme = QuantScheme::kGgml;
  const auto items = SpecItems(text, ggml ? "ggml" : "quant");
  for (const auto& [key, value] : items) {
    if (key == "scheme") {
      bool found = false;
      for (const auto& n : kSchemes) {
        if (value == n.name) s.scheme = n.scheme, found = true;
      }
      if (!found) Fail(kWhere, "scheme=" + value + " is not one of rtn|kivi|fp8|mikv");
    } else if (key == "bits") {
      s.key_bits = s.value_bits = static_cast<int>(SpecInt(key, value, 0, 8));
    } else if (key == "key-bits") {
      s.key_bits = static_cast<int>(SpecInt(key, value, 0, 8));
    } else if (key == "value-bits") {
      s.value_bits = static_cast<int>(SpecInt(key, value, 0, 8));
    } else if (key == "hi-bits") {
      s.hi_bits = static_cast<int>(SpecInt(key, value, 16, 16));  // only unquantized is simulated
    } else if (key == "group") {
      s.group = SpecInt(key, value, 1, 1 << 20);
    } else if (key == "block") {
      s.block = SpecInt(key, value, 1, 1 << 20);
    } else if (key == "keep") {
      s.keep = SpecFraction(key, value, false);
    } else if (key == "recent") {
      s.recent = SpecFraction(key, value, true);
    } else if (key == "key-axis") {
      if (value != "token" && value != "channel")
        Fail(kWhere, "key-axis=" + value + " is not one of token|channel");
      s.key_channel = value == "channel";
    } else if (key == "protect") {
      s.protect = SpecIntList(key, value);
    } else if (key == "table") {
      s.table = value;
    } else if (key == "k" || key == "v") {
      (key == "k" ? s.key_type : s.value_type) = GgmlType(key, value);
    } else {
      Fail(kWhere, "unknown key '" + key +
                       "' (scheme, bits, key-bits, value-bits, hi-bits, group, block, keep, "
                       "recent, key-axis, protect, table, k, v)");
    }
    if (ggml && key != "k" && key != "v" && key != "protect")
      Fail(kWhere, "ggml<...> takes k, v and protect");
  }
  const bool typed = std::any_of(items.begin(), items.end(),
                                 [](const auto& kv) { return kv.first == "k" || kv.first == "v"; });
  if (typed != (s.scheme == QuantScheme::kGgml) && (typed || ggml))
    Fail(kWhere, "k= and v= (llama.cpp's cache types) go with scheme=ggml");
  if (s.scheme == QuantScheme::kGgml) return s;
  const bool mikv = s.scheme == QuantScheme::kMikv;
  if (!mikv && (s.key_bits == 0 || s.value_bits == 0))
    Fail(kWhere, "bits=0 (evict) applies to scheme=mikv only");
  if (mikv && (s.key_bits == 0) != (s.value_bits == 0))
    Fail(kWhere, "mikv evicts keys and values together: both bits 0 or neither");
  if (s.key_channel && !mikv)
    Fail(kWhere, "key-axis applies to scheme=mikv (kivi keys are always per-channel)");
  if (!s.table.empty() && (!mikv || items.size() != 2)) {
    Fail(kWhere, "table= goes with scheme=mikv alone: the table holds every other setting");
  }
  if (s.key_channel)
    Fail(kWhere, "key-axis=channel needs the calibrated ranges of a kv-mixed table (table=PATH)");
  return s;
}

QuantCachePolicy::QuantCachePolicy(const QuantSpec& spec, const ModelConfig& c,
                                   QuantCalibration calibration)
    : spec_(spec),
      layers_(c.num_hidden_layers),
      head_dim_(c.head_dim),
      calibration_(std::move(calibration)) {
  if (spec_.group == 0 || spec_.group > head_dim_) spec_.group = head_dim_;
  for (int l : spec_.protect) {
    if (l >= layers_)
      Fail(kWhere, "protect layer " + std::to_string(l) + " does not exist (the model has " +
                       std::to_string(layers_) + ")");
  }
  for (std::int64_t l = 0; l < layers_; ++l) first_head_.push_back(c.KvHeadIndex(l, 0));
  const auto heads = static_cast<std::size_t>(c.TotalKvHeads());
  if (spec_.scheme == QuantScheme::kFp8 &&
      (calibration_.k_scale.size() != heads || calibration_.v_scale.size() != heads)) {
    Fail(kWhere,
         "scheme=fp8 needs the checkpoint's self_attn.k_scale/v_scale (run the kv-scales pass "
         "first)");
  }
  for (GgmlCacheType t : {spec_.key_type, spec_.value_type}) {
    if (spec_.scheme == QuantScheme::kGgml &&
        head_dim_ % static_cast<std::int64_t>(GgmlBlockSize(t)) != 0) {
      Fail(kWhere, std::string(GgmlCacheTypeName(t)) + " stores blocks of 32 along head_dim, " +
                       "which " + std::to_string(head_dim_) + " does not divide");
    }
  }
  if (spec_.key_channel &&
      calibration_.key_min.size() != heads * static_cast<std::size_t>(head_dim_)) {
    Fail(kWhere, "key-axis=channel needs per-channel key ranges for every layer and KV head");
  }
}

bool QuantCachePolicy::Protected(int layer) const {
  return std::find(spec_.protect.begin(), spec_.protect.end(), layer) != spec_.protect.end();
}

bool QuantCachePolicy::Untouched(int layer) const { return Protected(layer); }

bool QuantCachePolicy::RoundsQueries(int layer) const {
  return spec_.scheme == QuantScheme::kGgml && !Protected(layer);
}

void QuantCachePolicy::RoundQueries(int layer, float* q, std::int64_t rows, std::int64_t d,
                                    float* extras) const {
  const std::int64_t E = ScoreExtras(layer, d);
  for (std::int64_t r = 0; r < rows; ++r) {
    GgmlRoundQuery(spec_.key_type, q + r * d, static_cast<std::size_t>(d),
                   extras != nullptr ? extras + r * E : nullptr);
  }
}

void QuantCachePolicy::StoreGgmlKey(float* key, std::int64_t d, float* extras) const {
  const auto n = static_cast<std::size_t>(d);
  const std::vector<std::uint8_t> bytes = GgmlQuantize(spec_.key_type, key, n);
  GgmlDequantize(spec_.key_type, bytes.data(), n, key);
  if (extras != nullptr) GgmlKeyExtras(spec_.key_type, bytes.data(), n, extras);
}

std::int64_t QuantCachePolicy::ScoreExtras(int layer, std::int64_t d) const {
  if (!RoundsQueries(layer)) return 0;
  return static_cast<std::int64_t>(GgmlScoreExtras(spec_.key_type, static_cast<std::size_t>(d)));
}
bool QuantCachePolicy::Quantizes(int layer) const {
  return !Protected(layer) && !(spec_.scheme == QuantScheme::kMikv && spec_.key_bits == 0);
}

std::int64_t QuantCachePolicy::HighPrecisionTokens(std::int64_t i) const {
  if (i == 0) return 1;
  return std::min(i, RatioCapacity(spec_.keep, i)) +
         1;  // the high cache after step i - 1, plus token i
}

void QuantCachePolicy::HeadCache(int layer, const float* qkv, const QkvLayout& L, std::int64_t b,
                                 std::int64_t g, std::int64_t, const HeadCacheOut& out) const {
  const std::int64_t T = L.tokens, d = L.head_dim;
  const bool stored = Quantizes(layer);
  if (stored) CopyHead(qkv, L, b, g, out);
  const auto head = static_cast<std::size_t>(first_head_[static_cast<std::size_t>(layer)] + g);
  const std::uint8_t all = kCacheVisible | kCacheQuantKey | kCacheQuantValue;
  switch (spec_.scheme) {
    case QuantScheme::kRtn:
      QuantizePerToken(out.keys, T, d, spec_.group, spec_.key_bits);
      QuantizePerToken(out.values, T, d, spec_.group, spec_.value_bits);
      FillCausal(out.codes, T, all);
      return;
    case QuantScheme::kFp8:
      FakeQuantFp8(out.keys, T * d, calibration_.k_scale[head]);
      FakeQuantFp8(out.values, T * d, calibration_.v_scale[head]);
      FillCausal(out.codes, T, all);
      return;
    case QuantScheme::kKivi: {
      QuantizePerToken(out.values, T, d, spec_.group, spec_.value_bits);
      const std::int64_t B = spec_.block;
      for (std::int64_t start = 0; start + B <= T; start += B) {  // complete blocks, per channel
        for (std::int64_t c = 0; c < d; ++c)
          FakeQuantAsymmetric(out.keys + start * d + c, B, d, spec_.key_bits);
      }
      for (std::int64_t i = 0; i < T; ++i) {
        for (std::int64_t j = 0; j < T; ++j) {
          // j's block is stored quantized once its last token has been cached.
          const bool block_done = (j / B + 1) * B - 1 <= i;
          out.codes[i * T + j] = j > i
                                     ? std::uint8_t{kCacheHidden}
                                     : static_cast<std::uint8_t>(kCacheVisible | kCacheQuantValue |
                                                                 (block_done ? kCacheQuantKey : 0));
        }
      }
      return;
    }
    case QuantScheme::kGgml:
      for (std::int64_t t = 0; t < T; ++t) {
        StoreGgmlKey(out.keys + t * d, d,
                     out.key_extras ? out.key_extras + t * ScoreExtras(layer, d) : nullptr);
        GgmlRoundTrip(spec_.value_type, out.values + t * d, static_cast<std::size_t>(d));
      }
      FillCausal(out.codes, T, all);
      return;
    case QuantScheme::kMikv:
      break;
  }
  // MiKV: the low-precision copies first, then the decode-order simulation of which tokens are
  // still high precision at each step.
  const bool evict = spec_.key_bits == 0;
  if (stored) {
    if (spec_.key_channel) {
      const float* lo = calibration_.key_min.data() + head * static_cast<std::size_t>(d);
      const float* hi = calibration_.key_max.data() + head * static_cast<std::size_t>(d);
      for (std::int64_t c = 0; c < d; ++c)
        FakeQuantAsymmetricRange(out.keys + c, T, d, spec_.key_bits, lo[c], hi[c]);
    } else {
      QuantizePerToken(out.keys, T, d, spec_.group, spec_.key_bits);
    }
    QuantizePerToken(out.values, T, d, spec_.group, spec_.value_bits);
  }
  const std::int64_t group = L.heads / L.kv_heads;
  const float* rows = qkv + b * T * L.row();
  const double scale = L.ScoreScale();
  std::vector<std::uint8_t> high(static_cast<std::size_t>(T), 0);
  std::vector<std::int64_t> high_list;  // oldest first
  std::vector<double> received(static_cast<std::size_t>(T), 0.0), s(static_cast<std::size_t>(T));
  std::fill(out.codes, out.codes + T * T, std::uint8_t{kCacheHidden});
  for (std::int64_t i = 0; i < T; ++i) {
    high[static_cast<std::size_t>(i)] = 1;
    high_list.push_back(i);
    std::uint8_t* row = out.codes + i * T;
    for (std::int64_t j = 0; j <= i; ++j) {
      row[j] = high[static_cast<std::size_t>(j)] ? std::uint8_t{kCacheVisible}
                                                 : (evict ? std::uint8_t{kCacheHidden} : all);
    }
    // Attention of the group's queries over what the cache holds now (importance, H2O).
    for (std::int64_t h = 0; h < group; ++h) {
      const float* q = rows + i * L.row() + (g * group + h) * d;
      double m = -INFINITY;
      for (std::int64_t j = 0; j <= i; ++j) {
        if (!row[j]) continue;
        const float* k =
            (row[j] & kCacheQuantKey) ? out.keys + j * d : rows + j * L.row() + (L.heads + g) * d;
        double dot = 0;
        for (std::int64_t c = 0; c < d; ++c) dot += double(q[c]) * k[c];
        s[static_cast<std::size_t>(j)] = dot * scale;
        m = std::max(m, s[static_cast<std::size_t>(j)]);
      }
      double z = 0;
      for (std::int64_t j = 0; j <= i; ++j) {
        if (row[j])
          z += (s[static_cast<std::size_t>(j)] = std::exp(s[static_cast<std::size_t>(j)] - m));
      }
      for (std::int64_t j = 0; j <= i; ++j) {
        if (row[j]) received[static_cast<std::size_t>(j)] += s[static_cast<std::size_t>(j)] / z;
      }
    }
    // Trim the high-precision set to its budget: the newest `recent` share stays, the least
    // attended of the rest is demoted (older first on ties).
    const std::int64_t capacity = RatioCapacity(spec_.keep, i + 1);
    const auto protected_recent =
        static_cast<std::int64_t>(std::floor(spec_.recent * static_cast<double>(capacity)));
    while (static_cast<std::int64_t>(high_list.size()) > capacity) {
      const std::size_t candidates =
          high_list.size() -
          static_cast<std::size_t>(std::min<std::int64_t>(
              protected_recent, static_cast<std::int64_t>(high_list.size()) - 1));
      std::size_t victim = 0;
      for (std::size_t n = 1; n < candidates; ++n) {
        if (received[static_cast<std::size_t>(high_list[n])] <
            received[static_cast<std::size_t>(high_list[victim])])
          victim = n;
      }
      high[static_cast<std::size_t>(high_list[victim])] = 0;
      high_list.erase(high_list.begin() + static_cast<std::ptrdiff_t>(victim));
    }
  }
}

double QuantCachePolicy::AverageBits(std::int64_t T, std::int64_t from, std::int64_t d) const {
  const std::int64_t group = std::min<std::int64_t>(spec_.group == 0 ? d : spec_.group, d);
  double per_step_quantized = 0, full = 0;  // over all steps, one unprotected head
  for (std::int64_t i = from; i < T; ++i) {
    const auto n = static_cast<double>(i + 1);
    full += n;
    switch (spec_.scheme) {
      case QuantScheme::kRtn:
        per_step_quantized +=
            n * (AsymmetricBits(spec_.key_bits, group) + AsymmetricBits(spec_.value_bits, group)) /
            2;
        break;
      case QuantScheme::kFp8:
        per_step_quantized += n * 8;
        break;
      case QuantScheme::kGgml:
        per_step_quantized +=
            n * (GgmlBitsPerElement(spec_.key_type) + GgmlBitsPerElement(spec_.value_type)) / 2;
        break;
      case QuantScheme::kKivi: {
        const auto blocked = static_cast<double>((i + 1) / spec_.block * spec_.block);
        const double key =
            blocked * AsymmetricBits(spec_.key_bits, spec_.block) + (n - blocked) * 16;
        per_step_quantized += (key + n * AsymmetricBits(spec_.value_bits, group)) / 2;
        break;
      }
      case QuantScheme::kMikv: {
        const auto high = static_cast<double>(HighPrecisionTokens(i));
        const double key =
            spec_.key_channel ? spec_.key_bits : AsymmetricBits(spec_.key_bits, group);
        const double low =
            spec_.key_bits == 0 ? 0 : (key + AsymmetricBits(spec_.value_bits, group)) / 2;
        per_step_quantized += high * spec_.hi_bits + (n - high) * low;
        break;
      }
    }
  }
  const double quantized = per_step_quantized / full;
  const auto protected_layers = static_cast<double>(spec_.protect.size());
  return (protected_layers * 16 + (static_cast<double>(layers_) - protected_layers) * quantized) /
         static_cast<double>(layers_);
}

}  // namespace kvfold
