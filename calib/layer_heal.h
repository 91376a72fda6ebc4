// What healing a folded layer needs (the heal pass, docs/heal.md), without LibTorch: its
// settings, what it reports, and the calibration windows it trains on. Before any pass rewrites
// layer l, the converted sweep captures, for the first `windows` calibration windows, the layer's
// attention input (after input_layernorm, on the converted model's own hidden states) and the
// source layer's attention context on those inputs; the source's o_proj turns the context into the
// target the healed attention must reproduce. Windows HeldOutWindow() names are not trained on:
// they decide when to stop and whether the healed weights are kept.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "calib/layer_observer.h"

namespace kvfold {

// The heal pass's parameters (their defaults are declared once, in pass_registry.cc).
struct HealSettings {
  std::int64_t windows = 0;      // calibration windows captured (the first ones)
  std::int64_t steps = 0;        // Adam steps at most
  double lr = 0;                 // Adam's step, relative to each matrix's RMS
  std::int64_t check_every = 1;  // steps between two held-out checks
  std::int64_t patience = 1;     // checks without a better held-out error before stopping
  std::int64_t batch = 1;        // windows per Adam step
  std::uint64_t seed = 0;        // the order the fit windows are visited in
};

// Errors are relative: sum ||y_healed - y_source||^2 / sum ||y_source||^2 over the windows of
// one part (fit or held out), y the attention output.
struct HealOutcome {
  double fit_before = 0, fit_after = 0;
  double held_out_before = 0, held_out_after = 0;
  std::int64_t steps = 0;      // Adam steps taken
  std::int64_t best_step = 0;  // the step whose weights were kept; 0 = the fold's own
};

// One layer's captured windows, in window order.
struct HealWindows {
  std::int64_t T = 0, D = 0, HD = 0;    // tokens per window, hidden size, heads x head_dim
  std::vector<std::int64_t> sequences;  // calibration window indices, ascending
  std::vector<float> input;             // [W, T, D]
  std::vector<float> context;           // [W, T, HD]
  std::int64_t count() const { return static_cast<std::int64_t>(sequences.size()); }
};

// A LayerObserver of layer `layer` that keeps the windows whose index is below `limit`.
class HealCollector : public LayerObserver {
 public:
  HealCollector(int layer, std::int64_t limit) : layer_(layer), limit_(limit) {}
  unsigned Wants(int layer) const override;
  void Observe(const AttentionCapture& capture) override;
  HealWindows Take();

 private:
  int layer_;
  std::int64_t limit_;
  std::int64_t T_ = 0, D_ = 0, HD_ = 0;
  std::map<std::int64_t, std::pair<std::vector<float>, std::vector<float>>> windows_;
};

// Every collector's windows merged in window order (the same windows for any slot count).
HealWindows MergeHealWindows(std::vector<HealWindows> parts);

}  // namespace kvfold
