// KV-head compression passes: gqa-meanpool (the classic uptraining init) and gqa-svd
// (arXiv 2406.07056, with the RoPE-commuting and reconstruct key modes).
#pragma once

#include <memory>

#include "converter/passes/pass.h"

namespace kvfold {

std::unique_ptr<Pass> CreateGqaMeanpool(const PassSpec& spec, const ModelConfig& config);
std::unique_ptr<Pass> CreateGqaSvd(const PassSpec& spec, const ModelConfig& config);

}  // namespace kvfold
