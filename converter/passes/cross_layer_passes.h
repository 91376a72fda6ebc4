// Cross-layer KV sharing passes: mlkv (arXiv 2406.09297: groups of adjacent layers read the K/V
// of the group's lowest layer) and lckv (arXiv 2405.10637: layers read the top layer's K/V,
// except warm-up layers at the bottom and top). Output: an lckv-llama checkpoint whose
// layer_types records the sharing, without k/v projections in layers that compute none.
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "converter/passes/pass.h"

namespace kvfold {

// pythia-mlkv's choice of KV layers for `kv_layers` of `layers`: [0] + floor((i + 1) L / N),
// each layer reading the nearest one at or below it. Entry l = the layer l reads.
std::vector<std::int64_t> MlkvLayout(std::int64_t layers, std::int64_t kv_layers);
// LCKV's sandwich: ceil(w/2) warm-up layers at the bottom and floor(w/2) at the top keep their
// own K/V; the layers between read the highest of them (which reads itself).
std::vector<std::int64_t> LckvLayout(std::int64_t layers, std::int64_t warmup);

std::unique_ptr<Pass> CreateMlkv(const PassSpec& spec, const ModelConfig& config);
std::unique_ptr<Pass> CreateLckv(const PassSpec& spec, const ModelConfig& config);

}  // namespace kvfold
