#include "calib/layer_heal.h"

#include <utility>

#include "formats/error.h"

namespace kvfold {

unsigned HealCollector::Wants(int layer) const {
  return layer == layer_ ? (kCaptureAttnInput | kCaptureContext) : 0u;
}

void HealCollector::Observe(const AttentionCapture& capture) {
  const FloatView& x = capture.attn_input;
  const FloatView& c = capture.context;
  const std::int64_t B = x.shape.at(0);
  T_ = x.shape.at(1);
  D_ = x.shape.at(2);
  HD_ = c.shape.at(2);
  for (std::int64_t b = 0; b < B; ++b) {
    const std::int64_t sequence = capture.sequence + b;
    if (sequence >= limit_) continue;
    const float* xb = x.data + b * T_ * D_;
    const float* cb = c.data + b * T_ * HD_;
    windows_[sequence] = {std::vector<float>(xb, xb + T_ * D_),
                          std::vector<float>(cb, cb + T_ * HD_)};
  }
}

HealWindows HealCollector::Take() {
  HealWindows out;
  out.T = T_;
  out.D = D_;
  out.HD = HD_;
  for (auto& [sequence, w] : windows_) {
    out.sequences.push_back(sequence);
    out.input.insert(out.input.end(), w.first.begin(), w.first.end());
    out.context.insert(out.context.end(), w.second.begin(), w.second.end());
  }
  windows_.clear();
  return out;
}

HealWindows MergeHealWindows(std::vector<HealWindows> parts) {
  HealWindows out;
  std::map<std::int64_t, std::pair<const HealWindows*, std::int64_t>> order;
  for (const HealWindows& p : parts) {
    if (p.count() == 0) continue;
    out.T = p.T;
    out.D = p.D;
    out.HD = p.HD;
    for (std::int64_t i = 0; i < p.count(); ++i) {
      if (!order.emplace(p.sequences[static_cast<std::size_t>(i)], std::make_pair(&p, i)).second)
        Fail("heal", "internal: calibration window captured twice");
    }
  }
  for (const auto& [sequence, at] : order) {
    const auto& [p, i] = at;
    out.sequences.push_back(sequence);
    const auto x = p->input.begin() + i * out.T * out.D;
    const auto c = p->context.begin() + i * out.T * out.HD;
    out.input.insert(out.input.end(), x, x + out.T * out.D);
    out.context.insert(out.context.end(), c, c + out.T * out.HD);
  }
  return out;
}

}  // namespace kvfold
