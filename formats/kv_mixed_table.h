// The MiKV mixed-precision table written by the kv-mixed pass and read by `kvfold eval
// --kv-cache 'quant<scheme=mikv,table=PATH>'`: kv_mixed_precision.json (schema, the importance
// policy and its budget, precisions, axes, protected layers) plus kv_mixed_precision.safetensors
// (calibrated per-channel key ranges). Format: docs/formats.md, "kv_mixed_precision".
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace kvfold {

struct KvMixedTable {
  std::int64_t layers = 0, kv_heads = 0, head_dim = 0;
  std::int64_t calibration_tokens = 0;
  double keep = 0.2;    // fraction of tokens kept in high precision
  double recent = 0.5;  // share of that budget reserved for the newest tokens
  int hi_bits = 16;
  int key_bits = 4, value_bits = 4;
  std::string key_axis = "channel";  // channel: static calibrated ranges; token: per-token groups
  std::string value_axis = "token";
  std::int64_t group = 0;    // channels per per-token group (0 = head_dim)
  std::vector<int> protect;  // layers left unquantized
  // Post-RoPE key range per (layer, KV head, channel) over the calibration tokens.
  std::vector<float> key_min, key_max;  // [layers * kv_heads * head_dim]
};

inline constexpr const char* kKvMixedJson = "kv_mixed_precision.json";
inline constexpr const char* kKvMixedSafetensors = "kv_mixed_precision.safetensors";

std::string KvMixedTableJson(const KvMixedTable& table);
void WriteKvMixedSafetensors(const std::string& path, const KvMixedTable& table);

// Reads `json_path` and the safetensors file beside it. Throws Error naming the bad file.
KvMixedTable ReadKvMixedTable(const std::string& json_path);

}  // namespace kvfold
