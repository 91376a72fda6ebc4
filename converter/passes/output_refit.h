// Refitting o_proj after a layer's K/V were compressed (gqa-svd<refit=o>, docs/gqa.md). With c_s
// and c_c the layer's attention context before and after the pass on the same hidden states, and
// W_s and W_c its o_proj before and after (the fold rewrote it to decode the new values), the
// refit W minimises
//   sum over calibration tokens ||W c_c - W_s c_s||^2 + lambda ||W - W_c||_F^2,
// i.e. (C_cc + lambda I) W^T = C_cs W_s^T + lambda W_c^T with lambda = ridge * mean(diag C_cc).
// The ridge pulls W toward the fold's own o_proj (not toward 0): a large ridge keeps it.
#pragma once

#include <cstdint>
#include <limits>
#include <utility>
#include <vector>

#include "calib/output_refit_moments.h"

namespace kvfold {

struct OutputRefit {
  std::vector<double> wo;  // [hidden, dim] row-major: the o_proj to write (W_c when kept)
  double ridge = -1;       // the ridge of the refit written; -1 when W_c was kept
  // sum ||W c_c - W_s c_s||^2 / sum ||W_s c_s||^2 with W = W_c (before) and W = the refit fit
  // on the fit windows alone (after): an honest estimate on the held-out windows (NaN without
  // any), and the same on the fit windows.
  double held_out_before = std::numeric_limits<double>::quiet_NaN();
  double held_out_after = std::numeric_limits<double>::quiet_NaN();
  double fit_before = 0, fit_after = 0;
  std::vector<std::pair<double, double>>
      tried;  // ridge=auto: (ridge, held-out error) per grid point
};

// The ridges ridge=auto tries, besides keeping W_c.
const std::vector<double>& RefitRidgeGrid();

// The smallest ridge used: 0 asks for this numerical floor (a context direction no token used
// would otherwise make C_cc singular).
constexpr double kMinRefitRidge = 1e-9;

// `ridge` >= 0: that ridge. `ridge` < 0 (auto): every grid ridge fit on the fit windows and
// scored on the held-out ones; W_c is kept when none scores better. The refit written is fit
// again on every window with the ridge chosen. Throws Error when auto has no held-out window.
// `source_wo` (W_s) and `folded_wo` (W_c) are [hidden, dim] row-major.
OutputRefit RefitOutput(const std::vector<double>& source_wo, const std::vector<double>& folded_wo,
                        std::int64_t hidden, const OutputRefitMoments& moments, double ridge);

}  // namespace kvfold
