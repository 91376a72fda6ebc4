// What refitting o_proj after a KV-head fold needs (gqa-svd<refit=o>, docs/gqa.md): the
// attention context c of one layer (o_proj's input, [H d] per token) as the layer was before the
// pass (c_s) and after it (c_c), on the same hidden states, summed into second moments. Every
// fourth calibration window (see HeldOutWindow) is held out with sums of its own, so that the ridge
// can be chosen on windows the fit did not see.
#pragma once

#include <cstdint>
#include <limits>
#include <map>
#include <vector>

#include "calib/layer_observer.h"
#include "formats/spill_file.h"

namespace kvfold {

// Of `windows` calibration windows, those whose index is 3 mod 4 are held out; with 2 or 3
// windows, the last one (a single window holds none out).
bool HeldOutWindow(std::int64_t sequence, std::int64_t windows);

struct OutputRefitMoments {
  // Row-major [dim, dim] sums in double over one part's tokens.
  struct Part {
    std::int64_t tokens = 0;
    std::vector<double> cc;  // sum c_c c_c^T
    std::vector<double> cs;  // sum c_c c_s^T
    std::vector<double> ss;  // sum c_s c_s^T
    void Merge(Part&& other);
  };
  std::int64_t dim = 0;  // H d
  Part fit, held_out;
  void Merge(OutputRefitMoments&& other);
};

// A LayerObserver of one layer in two runs over the same batches: first the layer before the pass
// (its contexts are kept, per batch), then, after BeginConverted(), the layer after it (each
// batch's contexts meet the kept ones and join the sums). Kept contexts stay in memory up to
// `memory_bytes`; the batches beyond it wait in a spill file (formats/spill_file.h). The sums do
// not depend on where a batch waited.
class OutputRefitCollector : public LayerObserver {
 public:
  OutputRefitCollector(int layer, std::int64_t windows,
                       std::uint64_t memory_bytes = std::numeric_limits<std::uint64_t>::max())
      : layer_(layer), windows_(windows), memory_(memory_bytes) {}
  void BeginConverted() { converted_ = true; }
  unsigned Wants(int layer) const override { return layer == layer_ ? kCaptureContext : 0u; }
  void Observe(const AttentionCapture& capture) override;
  // The sums; throws Error when a batch of the first run never came back in the second.
  OutputRefitMoments Take();
  std::uint64_t resident_bytes() const { return memory_.used(); }  // kept in memory now
  std::uint64_t spilled_bytes() const { return spill_.size(); }    // ever spilled

 private:
  // One batch's c_s rows: in memory, or `count` floats at `offset` in the spill file.
  struct Kept {
    std::vector<float> rows;
    std::uint64_t offset = 0;
    std::size_t count = 0;
    bool spilled = false;
  };
  void Keep(std::int64_t sequence, const FloatView& c);
  const std::vector<float>& Rows(Kept& kept);  // the batch's c_s, read back when spilled
  // The sums of the batch's windows of one part (held out or fit); `s` is its kept c_s.
  void AccumulatePart(const AttentionCapture& capture, const float* s, bool held_out);

  int layer_;
  std::int64_t windows_;  // calibration windows in all (HeldOutWindow)
  MemoryBudget memory_;
  bool converted_ = false;
  std::map<std::int64_t, Kept> source_;  // first sequence of a batch -> its c_s rows
  SpillFile spill_{"refit context spill file"};
  OutputRefitMoments moments_;
  std::vector<float> scratch_, read_back_, gathered_;
};

}  // namespace kvfold
