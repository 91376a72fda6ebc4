// RoPE's frequencies as transformers computes them (modeling_rope_utils), for the rope_scaling
// types kvfold accepts: default, linear, dynamic (NTK), llama3 (Llama 3.1-3.3) and longrope
// (Phi-3 128k, Phi-4-mini). Every head shares these frequencies, so the KV-head folds that commute
// with RoPE stay exact under all of them. yarn and the rest are refused by name when config.json
// is read.
#pragma once

#include <cstdint>
#include <nlohmann/json_fwd.hpp>
#include <string>
#include <vector>

namespace kvfold {

struct RopeScaling {
  std::string type = "default";   // default | linear | dynamic | llama3 | longrope
  double factor = 1.0;            // linear, dynamic, llama3
  double low_freq_factor = 1.0;   // llama3
  double high_freq_factor = 4.0;  // llama3
  std::int64_t original_max_position_embeddings = 0;  // llama3, longrope
  // longrope: one divisor per rotary frequency, the long ones for sequences longer than
  // original_max_position_embeddings; attention_factor multiplies cos and sin (0 = derive it
  // from max_position_embeddings / original_max_position_embeddings, as transformers does).
  std::vector<double> short_factor, long_factor;
  double attention_factor = 0;
};

// config.json's rope_scaling (or transformers v5's rope_parameters minus rope_theta); null or
// absent is "default". Throws Error naming `file` and the field for anything else.
RopeScaling ParseRopeScaling(const nlohmann::json& rope_scaling, const std::string& file);

// inv_freq[j], j < rotary_dim / 2, for sequences of `tokens` positions (dynamic scaling depends
// on the length, as transformers' dynamic update does: beyond max_position_embeddings only;
// longrope takes its long factors when `tokens` exceeds original_max_position_embeddings).
std::vector<double> RopeInverseFrequencies(const RopeScaling& scaling, double theta,
                                           std::int64_t rotary_dim,
                                           std::int64_t max_position_embeddings,
                                           std::int64_t tokens);

// The factor transformers multiplies into cos and sin (longrope: given, or sqrt(1 + ln(f) /
// ln(original)) with f = max_position_embeddings / original, 1 when f <= 1); 1 for the others.
double RopeAttentionFactor(const RopeScaling& scaling, std::int64_t max_position_embeddings);

// Short description for inspect: "llama3 (factor 8, low 1, high 4, original 8192)".
std::string RopeScalingText(const RopeScaling& scaling);

}  // namespace kvfold
