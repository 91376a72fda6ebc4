// heal: layer-wise healing after a lossy K/V pass (docs/heal.md). Each layer's attention
// projections are trained with Adam, on the converted model's own hidden states, to reproduce the
// source layer's attention output; held-out calibration windows stop the training and decide
// whether the healed weights replace the fold's. The output keeps the architecture it had.
#pragma once

#include <memory>

#include "converter/passes/pass.h"

namespace kvfold {

std::unique_ptr<Pass> CreateHeal(const PassSpec& spec, const ModelConfig& config);

}  // namespace kvfold
