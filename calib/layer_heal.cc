#include "calib/layer_heal.h"

#include <utility>

#include "formats/error.h"

namespace kvfold {
namespace {

// Row `i` of a [W, T, width] capture, appended to `out` (nothing when the capture is absent).
void AppendWindow(const std::vector<float>& from, std::int64_t i, std::int64_t rows,
                  std::vector<float>& out) {
  if (from.empty()) return;
  out.insert(out.end(), from.begin() + i * rows, from.begin() + (i + 1) * rows);
}

void AppendView(const FloatView& v, std::int64_t b, std::vector<float>& out) {
  if (v.data == nullptr) return;
  const std::int64_t rows = v.shape.at(1) * v.shape.at(2);
  out.insert(out.end(), v.data + b * rows, v.data + (b + 1) * rows);
}

}  // namespace

unsigned HealCollector::Wants(int layer) const { return layer == layer_ ? bits_ : 0u; }

void HealCollector::Observe(const AttentionCapture& capture) {
  for (const FloatView* v : {&capture.attn_input, &capture.residual}) {
    if (v->data != nullptr) windows_.D = v->shape.at(2);
  }
  const FloatView& any = capture.context.data      ? capture.context
                         : capture.attn_input.data ? capture.attn_input
                                                   : capture.residual;
  const std::int64_t B = any.shape.at(0);
  windows_.T = any.shape.at(1);
  if (capture.context.data) windows_.HD = capture.context.shape.at(2);
  for (std::int64_t b = 0; b < B; ++b) {
    if (capture.sequence + b >= limit_) continue;
    windows_.sequences.push_back(capture.sequence + b);
    if (bits_ & kCaptureAttnInput) AppendView(capture.attn_input, b, windows_.input);
    if (bits_ & kCaptureContext) AppendView(capture.context, b, windows_.context);
    if (bits_ & kCaptureResidual) AppendView(capture.residual, b, windows_.residual);
  }
}

HealWindows HealCollector::Take() {
  HealWindows taken = std::move(windows_);
  windows_ = HealWindows();
  std::vector<HealWindows> one;
  one.push_back(std::move(taken));
  return MergeHealWindows(std::move(one));  // sorted by window
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
    AppendWindow(p->input, i, out.T * out.D, out.input);
    AppendWindow(p->context, i, out.T * out.HD, out.context);
    AppendWindow(p->residual, i, out.T * out.D, out.residual);
  }
  return out;
}

void HealWindows::Merge(const HealWindows& other) {
  std::vector<HealWindows> parts(2);
  parts[0] = std::move(*this);
  parts[1] = other;
  *this = MergeHealWindows(std::move(parts));
}

HealWindows TrajectoryWindows(HealWindows converted, const HealWindows& source) {
  if (converted.sequences != source.sequences ||
      converted.residual.size() != source.residual.size())
    Fail("heal", "internal: the source and converted streams captured different windows");
  converted.HD = source.HD;
  converted.context = source.context;
  for (std::size_t i = 0; i < converted.residual.size(); ++i)
    converted.residual[i] = source.residual[i] - converted.residual[i];
  return converted;
}

}  // namespace kvfold
