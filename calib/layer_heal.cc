#include "calib/layer_heal.h"

#include <utility>

#include "formats/error.h"

namespace kvfold {
namespace {

// Block `b` of a [B, T, width] capture appended to `rows` (made on first use), and recorded in
// `field`; nothing when the capture is absent.
void AppendView(const FloatView& v, std::int64_t b, const std::shared_ptr<MemoryBudget>& budget,
                std::shared_ptr<SpilledRows>& rows, WindowField& field) {
  if (v.data == nullptr) return;
  const std::int64_t width = v.shape.at(1) * v.shape.at(2);
  if (!rows) rows = std::make_shared<SpilledRows>(budget, "heal window spill file");
  field.Add(rows, rows->Append(v.data + b * width, width));
}

// `from`'s window i, added to `to` (nothing when `from` holds none).
void TakeWindow(const WindowField& from, std::int64_t i, WindowField& to) {
  if (!from.empty()) to.AddFrom(from, i);
}

}  // namespace

void WindowField::Read(std::int64_t window, float* out) const {
  const At& at = blocks_.at(static_cast<std::size_t>(window));
  at.rows->Read(at.index, out);
}

std::vector<float> WindowField::Read(std::int64_t window) const {
  const At& at = blocks_.at(static_cast<std::size_t>(window));
  std::vector<float> out(static_cast<std::size_t>(at.rows->width()));
  at.rows->Read(at.index, out.data());
  return out;
}

std::vector<float> WindowField::All() const {
  std::vector<float> out;
  for (std::int64_t w = 0; w < count(); ++w) {
    const std::vector<float> block = Read(w);
    out.insert(out.end(), block.begin(), block.end());
  }
  return out;
}

std::shared_ptr<MemoryBudget> HealBudget(std::uint64_t bytes) {
  return std::make_shared<MemoryBudget>(bytes);
}

HealWindows MakeHealWindows(std::int64_t T, std::int64_t D, std::int64_t HD,
                            std::vector<std::int64_t> sequences, const std::vector<float>& input,
                            const std::vector<float>& context, const std::vector<float>& residual,
                            const std::shared_ptr<MemoryBudget>& budget) {
  HealWindows out;
  out.T = T;
  out.D = D;
  out.HD = HD;
  out.sequences = std::move(sequences);
  const std::int64_t W = out.count();
  const std::pair<const std::vector<float>*, WindowField*> fields[] = {
      {&input, &out.input}, {&context, &out.context}, {&residual, &out.residual}};
  for (const auto& [all, field] : fields) {
    if (all->empty()) continue;
    const std::int64_t width = W > 0 ? static_cast<std::int64_t>(all->size()) / W : 0;
    if (W == 0 || width * W != static_cast<std::int64_t>(all->size()))
      Fail("heal", "internal: windows of different sizes");
    auto rows = std::make_shared<SpilledRows>(budget, "heal window spill file");
    for (std::int64_t i = 0; i < W; ++i)
      field->Add(rows, rows->Append(all->data() + i * width, width));
  }
  return out;
}

HealCollector::HealCollector(int layer, std::int64_t limit, unsigned bits,
                             std::shared_ptr<MemoryBudget> budget)
    : layer_(layer), limit_(limit), bits_(bits), budget_(std::move(budget)) {}

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
    if (bits_ & kCaptureAttnInput)
      AppendView(capture.attn_input, b, budget_, input_, windows_.input);
    if (bits_ & kCaptureContext)
      AppendView(capture.context, b, budget_, context_, windows_.context);
    if (bits_ & kCaptureResidual)
      AppendView(capture.residual, b, budget_, residual_, windows_.residual);
  }
}

HealWindows HealCollector::Take() {
  HealWindows taken = std::move(windows_);
  windows_ = HealWindows();
  input_.reset();
  context_.reset();
  residual_.reset();
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
    TakeWindow(p->input, i, out.input);
    TakeWindow(p->context, i, out.context);
    TakeWindow(p->residual, i, out.residual);
  }
  return out;
}

void HealWindows::Merge(const HealWindows& other) {
  std::vector<HealWindows> parts(2);
  parts[0] = std::move(*this);
  parts[1] = other;
  *this = MergeHealWindows(std::move(parts));
}

HealWindows TrajectoryWindows(const HealWindows& converted, const HealWindows& source,
                              const std::shared_ptr<MemoryBudget>& budget) {
  if (converted.sequences != source.sequences ||
      converted.residual.count() != source.residual.count())
    Fail("heal", "internal: the source and converted streams captured different windows");
  HealWindows out;
  out.T = converted.T;
  out.D = converted.D;
  out.HD = source.HD;
  out.sequences = converted.sequences;
  out.input = converted.input;
  out.context = source.context;
  auto rows = std::make_shared<SpilledRows>(budget, "heal window spill file");
  for (std::int64_t w = 0; w < converted.count(); ++w) {
    std::vector<float> difference = source.residual.Read(w);
    const std::vector<float> mine = converted.residual.Read(w);
    for (std::size_t i = 0; i < difference.size(); ++i) difference[i] -= mine[i];
    out.residual.Add(rows,
                     rows->Append(difference.data(), static_cast<std::int64_t>(difference.size())));
  }
  return out;
}

}  // namespace kvfold
