// What healing a folded layer needs (the heal pass, docs/heal.md), without LibTorch: its
// settings, what it reports, and the calibration windows it trains on. Before any pass rewrites
// layer l, the converted sweep captures, for the first `windows` calibration windows, the layer's
// attention input (after input_layernorm, on the converted model's own hidden states) and a
// source attention context: the source layer's on those same inputs (target=layer), or on the
// source model's own hidden states (target=trajectory, with the two residual streams). The
// source's o_proj turns the context into the target the healed attention must reproduce. Windows
// HeldOutWindow() names are not trained on: they decide when to stop and whether the healed
// weights are kept.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "calib/layer_observer.h"
#include "formats/spill_file.h"

namespace kvfold {

// The heal pass's parameters (their defaults are declared once, in pass_registry.cc).
enum class HealTarget {
  kLayer,       // the source layer's attention output on the converted hidden states
  kTrajectory,  // the source model's residual stream after attention: x_s + attn_s(h_s) - x_c
  kLogits,      // the source model's next-token distributions, through the source layers above
};

struct HealSettings {
  HealTarget target = HealTarget::kLayer;
  std::int64_t windows = 0;      // calibration windows captured (the first ones)
  std::int64_t steps = 0;        // Adam steps at most
  double lr = 0;                 // Adam's step, relative to each matrix's RMS
  std::int64_t check_every = 1;  // steps between two held-out checks
  std::int64_t patience = 1;     // checks without a better held-out error before stopping
  std::int64_t batch = 1;        // windows per Adam step
  std::uint64_t seed = 0;        // the order the fit windows are visited in (and rank's B)
  // 0: Adam on the whole matrices; R > 0: on a rank-R delta of each, W + A B with A [rows, R]
  // zero at the start and B [R, cols] a fixed random draw (so W starts as the fold's)
  std::int64_t rank = 0;
};

// Errors are relative: sum ||y_healed - y_source||^2 / sum ||y_source||^2 over the windows of
// one part (fit or held out), y the attention output.
struct HealOutcome {
  double fit_before = 0, fit_after = 0;
  double held_out_before = 0, held_out_after = 0;
  std::int64_t steps = 0;      // Adam steps taken
  std::int64_t best_step = 0;  // the step whose weights were kept; 0 = the fold's own
};

// One capture (attention input, context or residual) of every window, in window order: each
// window's block lives in a SpilledRows (in memory within heal's budget, else in its spill
// file), shared by the copies of a HealWindows.
class WindowField {
 public:
  bool empty() const { return blocks_.empty(); }
  std::int64_t count() const { return static_cast<std::int64_t>(blocks_.size()); }
  void Add(std::shared_ptr<const SpilledRows> rows, std::int64_t index) {
    blocks_.push_back({std::move(rows), index});
  }
  void AddFrom(const WindowField& other, std::int64_t window) {  // the same block, shared
    blocks_.push_back(other.blocks_.at(static_cast<std::size_t>(window)));
  }
  void Read(std::int64_t window, float* out) const;  // its block
  std::vector<float> Read(std::int64_t window) const;
  std::vector<float> All() const;  // every block, in order (tests, packing across ranks)

 private:
  struct At {
    std::shared_ptr<const SpilledRows> rows;
    std::int64_t index;
  };
  std::vector<At> blocks_;
};

// One layer's captured windows, in window order.
struct HealWindows {
  std::int64_t T = 0, D = 0, HD = 0;    // tokens per window, hidden size, heads x head_dim
  std::vector<std::int64_t> sequences;  // calibration window indices, ascending
  WindowField input;                    // [T, D] per window
  WindowField context;                  // [T, HD] per window
  // [T, D] per window, or empty: added to the target (target=trajectory: x_source - x_converted,
  // the residual streams entering the layer). A collector stores the residual stream here.
  WindowField residual;
  // [T, D] per window, or empty: the converted residual stream entering the layer
  // (target=logits, which adds the attention output to it and runs the layers above).
  WindowField stream;
  std::int64_t count() const { return static_cast<std::int64_t>(sequences.size()); }
  void Merge(const HealWindows& other);  // MergeHealWindows of the two
};

// Heal's captured windows may keep `bytes` in memory (--hidden-memory, an allowance of their
// own); the rest spill to an unlinked temporary file.
std::shared_ptr<MemoryBudget> HealBudget(std::uint64_t bytes);

// Windows made from whole [W, T, width] arrays (tests; windows unpacked from another rank), the
// fields that are empty left empty.
HealWindows MakeHealWindows(std::int64_t T, std::int64_t D, std::int64_t HD,
                            std::vector<std::int64_t> sequences, const std::vector<float>& input,
                            const std::vector<float>& context, const std::vector<float>& residual,
                            const std::shared_ptr<MemoryBudget>& budget);

// A LayerObserver of layer `layer` that keeps the windows whose index is below `limit`: the
// captures `bits` names among kCaptureAttnInput, kCaptureContext and kCaptureResidual, within
// `budget`.
class HealCollector : public LayerObserver {
 public:
  HealCollector(int layer, std::int64_t limit, unsigned bits,
                std::shared_ptr<MemoryBudget> budget = HealBudget(UINT64_MAX));
  unsigned Wants(int layer) const override;
  void Observe(const AttentionCapture& capture) override;
  HealWindows Take();

 private:
  int layer_;
  std::int64_t limit_;
  unsigned bits_;
  std::shared_ptr<MemoryBudget> budget_;
  HealWindows windows_;  // in arrival order; Take() sorts
  std::shared_ptr<SpilledRows> input_, context_, residual_;
};

// Every collector's windows merged in window order (the same windows for any slot count).
HealWindows MergeHealWindows(std::vector<HealWindows> parts);

// target=trajectory: the converted stream's inputs, the source stream's context, and as
// `residual` the source's residual stream minus the converted one (same windows in both), kept
// within `budget`.
HealWindows TrajectoryWindows(const HealWindows& converted, const HealWindows& source,
                              const std::shared_ptr<MemoryBudget>& budget);

}  // namespace kvfold
