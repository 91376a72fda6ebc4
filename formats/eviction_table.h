// The L2-norm eviction policy table written by the kv-norm-analysis pass and read by
// `--kv-cache evict<policy=table>`: kv_eviction_policy.json (schema, rule and per-head
// recommendations) plus kv_eviction_policy.safetensors (the measures as float32 arrays).
// Format: docs/formats.md, "kv_eviction_policy".
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace kvfold {

struct EvictionTableHead {
  double spearman = 0;    // mean over windows of Spearman(key L2 norm, attention received)
  double alr = 0;         // attention loss of the L2 ranking over the ideal one (lower is better)
  double alr_random = 0;  // the same for a random ranking (expected), for scale
  double sink_share = 0;  // attention share of the first token (an attention sink when large)
  double keep = 1.0;      // recommended keep ratio
  bool skip = false;      // exempt: keeps its full cache
};

struct EvictionTable {
  std::int64_t layers = 0, kv_heads = 0;
  std::int64_t windows = 0, window = 0;  // calibration windows the measures average over
  double budget = 0;                     // the rule's attention-loss budget
  std::string rule;                      // the rule, in words
  std::vector<double> keep_grid;         // keep ratios the loss curves are sampled at
  std::vector<EvictionTableHead> heads;  // [layer * kv_heads + head]
  // Attention mass lost when keeping keep_grid[r] of the tokens: [layer][head][r], flattened.
  std::vector<double> loss_l2, loss_ideal;
  const EvictionTableHead& at(std::int64_t layer, std::int64_t head) const {
    return heads[static_cast<std::size_t>(layer * kv_heads + head)];
  }
};

inline constexpr const char* kEvictionTableJson = "kv_eviction_policy.json";
inline constexpr const char* kEvictionTableSafetensors = "kv_eviction_policy.safetensors";

// The JSON text and the safetensors tensors of `table` (written by the caller, atomically).
std::string EvictionTableJson(const EvictionTable& table);
void WriteEvictionTableSafetensors(const std::string& path, const EvictionTable& table);

// Reads the JSON file (the recommendations the runtime needs). Throws Error naming `path`.
EvictionTable ReadEvictionTable(const std::string& path);

}  // namespace kvfold
