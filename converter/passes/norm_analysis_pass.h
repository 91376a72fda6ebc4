// kv-norm-analysis (arXiv 2406.11430): measures, per layer and KV head, how well a key's L2 norm
// predicts the attention it receives, and writes the eviction policy table
// (formats/eviction_table.h) that `kvfold eval --kv-cache evict<policy=table>` follows.
#pragma once

#include <memory>

#include "converter/passes/pass.h"
#include "formats/eviction_table.h"

namespace kvfold {

std::unique_ptr<Pass> CreateNormAnalysis(const PassSpec& spec, const ModelConfig& config);

// The table's rule, applied to measures averaged over calibration windows: a head is exempt
// (skip, keep 1.0) when its ALR exceeds max_alr_ratio x the random order's ALR; otherwise its
// keep ratio is the smallest grid ratio whose L2-order attention loss is at most `budget`.
EvictionTable BuildEvictionTable(const KvStatistics& statistics, double budget,
                                 double max_alr_ratio, std::int64_t window);

}  // namespace kvfold
