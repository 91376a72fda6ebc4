#include "formats/rope.h"

#include <cmath>
#include <nlohmann/json.hpp>
#include <sstream>

#include "formats/error.h"

namespace kvfold {
namespace {

double Number(const nlohmann::json& block, const char* key, const std::string& file, bool required,
              double fallback) {
  if (!block.contains(key) || block[key].is_null()) {
    if (required) Fail(file, std::string("rope_scaling needs '") + key + "'");
    return fallback;
  }
  const double value = block[key].is_number() ? block[key].get<double>() : 0.0;
  if (!(value > 0) || !std::isnormal(value)) {  // a denormal factor makes inf frequencies
    Fail(file, std::string("rope_scaling.") + key + " must be a positive number (" +
                   block[key].dump() + " is not a normal float64)");
  }
  return block[key].get<double>();
}

std::vector<double> Factors(const nlohmann::json& block, const char* key, const std::string& file) {
  if (!block.contains(key) || !block[key].is_array() || block[key].empty() ||
      block[key].size() > 65536)
    Fail(file, std::string("rope_scaling needs '") + key + "', a list of numbers");
  std::vector<double> out;
  for (const auto& v : block[key]) {
    const double x = v.is_number() ? v.get<double>() : 0.0;
    if (!(x > 0) || !std::isnormal(x))
      Fail(file, std::string("rope_scaling.") + key + " holds " + v.dump() +
                     " (each factor must be a positive normal number)");
    out.push_back(x);
  }
  return out;
}

// longrope's factors; original_max_position_embeddings may come from the config's top level
// instead (ModelConfig fills it in), and its length check needs the rotary width.
RopeScaling ParseLongRope(const nlohmann::json& rs, const std::string& file) {
  RopeScaling s;
  s.type = "longrope";
  s.short_factor = Factors(rs, "short_factor", file);
  s.long_factor = Factors(rs, "long_factor", file);
  if (s.short_factor.size() != s.long_factor.size())
    Fail(file, "rope_scaling.short_factor and long_factor differ in length");
  s.factor = Number(rs, "factor", file, false, 0.0);
  s.attention_factor = Number(rs, "attention_factor", file, false, 0.0);
  s.original_max_position_embeddings =
      static_cast<std::int64_t>(Number(rs, "original_max_position_embeddings", file, false, 0));
  return s;
}

}  // namespace

RopeScaling ParseRopeScaling(const nlohmann::json& rs, const std::string& file) {
  RopeScaling s;
  if (rs.is_null()) return s;
  if (!rs.is_object()) Fail(file, "rope_scaling must be an object or null");
  const char* key = rs.contains("rope_type") ? "rope_type" : "type";  // "type" is the older name
  if (rs.contains(key)) {
    if (!rs[key].is_string()) Fail(file, std::string("rope_scaling.") + key + " must be a string");
    s.type = rs[key].get<std::string>();
  }
  if (s.type == "default") return s;
  if (s.type == "su") s.type = "longrope";  // Phi-3's first name for it, as transformers maps it
  if (s.type == "yarn" || s.type == "ntk" || s.type == "mrope") {
    Fail(file, "rope_scaling type '" + s.type +
                   "' is not supported (kvfold implements default, linear, dynamic, llama3 "
                   "and longrope; yarn's factor and attention scaling differ between transformers "
                   "versions)");
  }
  if (s.type == "longrope") return ParseLongRope(rs, file);
  if (s.type != "linear" && s.type != "dynamic" && s.type != "llama3") {
    Fail(file, "rope_scaling type '" + s.type +
                   "' is not supported (kvfold implements default, linear, dynamic, llama3 and "
                   "longrope)");
  }
  s.factor = Number(rs, "factor", file, true, 1.0);
  if (s.type == "llama3") {
    s.low_freq_factor = Number(rs, "low_freq_factor", file, true, 1.0);
    s.high_freq_factor = Number(rs, "high_freq_factor", file, true, 4.0);
    s.original_max_position_embeddings =
        static_cast<std::int64_t>(Number(rs, "original_max_position_embeddings", file, true, 0));
    if (s.high_freq_factor <= s.low_freq_factor)
      Fail(file, "rope_scaling.high_freq_factor must exceed low_freq_factor");
  }
  return s;
}

std::vector<double> RopeInverseFrequencies(const RopeScaling& s, double theta,
                                           std::int64_t rotary_dim,
                                           std::int64_t max_position_embeddings,
                                           std::int64_t tokens) {
  const double dim = static_cast<double>(rotary_dim);
  double base = theta;
  if (s.type == "dynamic" && tokens > max_position_embeddings) {
    const double ratio =
        s.factor * static_cast<double>(tokens) / static_cast<double>(max_position_embeddings);
    base *= std::pow(ratio - (s.factor - 1), dim / (dim - 2));
  }
  std::vector<double> inv(static_cast<std::size_t>(rotary_dim / 2));
  for (std::size_t j = 0; j < inv.size(); ++j)
    inv[j] = 1.0 / std::pow(base, 2.0 * static_cast<double>(j) / dim);
  if (s.type == "longrope") {  // the sizes were checked against rotary_dim when parsed
    const bool long_context = tokens > s.original_max_position_embeddings;
    const std::vector<double>& ext = long_context ? s.long_factor : s.short_factor;
    for (std::size_t j = 0; j < inv.size() && j < ext.size(); ++j) inv[j] /= ext[j];
  }
  if (s.type == "linear") {
    for (double& f : inv) f /= s.factor;
  } else if (s.type == "llama3") {
    // Long wavelengths are divided by the factor, short ones kept, the band between blended.
    const double context = static_cast<double>(s.original_max_position_embeddings);
    const double low_wavelen = context / s.low_freq_factor,
                 high_wavelen = context / s.high_freq_factor;
    for (double& f : inv) {
      const double wavelen = 2 * M_PI / f;
      if (wavelen > low_wavelen) {
        f /= s.factor;
      } else if (wavelen >= high_wavelen) {
        const double smooth =
            (context / wavelen - s.low_freq_factor) / (s.high_freq_factor - s.low_freq_factor);
        f = (1 - smooth) * f / s.factor + smooth * f;
      }
    }
  }
  return inv;
}

double RopeAttentionFactor(const RopeScaling& s, std::int64_t max_position_embeddings) {
  if (s.type != "longrope") return 1.0;
  if (s.attention_factor > 0) return s.attention_factor;
  const double original = static_cast<double>(s.original_max_position_embeddings);
  const double factor =
      s.factor > 0 ? s.factor : static_cast<double>(max_position_embeddings) / original;
  return factor <= 1.0 ? 1.0 : std::sqrt(1 + std::log(factor) / std::log(original));
}

std::string RopeScalingText(const RopeScaling& s) {
  std::ostringstream out;
  out << s.type;
  if (s.type == "linear" || s.type == "dynamic") out << " (factor " << s.factor << ")";
  if (s.type == "llama3") {
    out << " (factor " << s.factor << ", low " << s.low_freq_factor << ", high "
        << s.high_freq_factor << ", original " << s.original_max_position_embeddings << ")";
  }
  if (s.type == "longrope") {
    out << " (" << s.short_factor.size() << " short/long factors, original "
        << s.original_max_position_embeddings;
    if (s.attention_factor > 0) out << ", attention factor " << s.attention_factor;
    out << ")";
  }
  return out.str();
}

}  // namespace kvfold
