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
  if (s.type == "yarn" || s.type == "longrope" || s.type == "ntk" || s.type == "mrope") {
    Fail(file, "rope_scaling type '" + s.type +
                   "' is not supported (kvfold implements default, linear, dynamic "
                   "and llama3; yarn's factor and attention scaling differ between transformers "
                   "versions)");
  }
  if (s.type != "linear" && s.type != "dynamic" && s.type != "llama3") {
    Fail(file, "rope_scaling type '" + s.type +
                   "' is not supported (kvfold implements default, linear, dynamic and llama3)");
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

std::string RopeScalingText(const RopeScaling& s) {
  std::ostringstream out;
  out << s.type;
  if (s.type == "linear" || s.type == "dynamic") out << " (factor " << s.factor << ")";
  if (s.type == "llama3") {
    out << " (factor " << s.factor << ", low " << s.low_freq_factor << ", high "
        << s.high_freq_factor << ", original " << s.original_max_position_embeddings << ")";
  }
  return out.str();
}

}  // namespace kvfold
