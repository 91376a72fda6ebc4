#include "calib/output_refit_moments.h"

#include <utility>

#include "calib/moment_sums.h"
#include "formats/error.h"

namespace kvfold {
namespace {

// acc += x; an empty `acc` takes x's storage (the first slot's sums are not copied).
void AddInto(std::vector<double>& acc, std::vector<double>&& x) {
  if (x.empty()) return;
  if (acc.empty()) {
    acc = std::move(x);
    return;
  }
  for (std::size_t i = 0; i < x.size(); ++i) acc[i] += x[i];
}

// One part's rows of a batch: c_c and c_s, [rows, dim] each.
void Accumulate(const float* c, const float* s, std::int64_t rows, std::int64_t dim,
                std::vector<float>& scratch, OutputRefitMoments::Part& part) {
  for (std::vector<double>* m : {&part.cc, &part.cs, &part.ss}) {
    if (m->empty()) m->assign(static_cast<std::size_t>(dim * dim), 0.0);
  }
  AddSymmetricMoment(c, rows, dim, scratch, part.cc.data());  // lower triangles: see Take
  AddCrossMoment(c, s, rows, dim, scratch, part.cs.data(), dim);
  AddSymmetricMoment(s, rows, dim, scratch, part.ss.data());
  part.tokens += rows;
}

void MirrorSymmetric(OutputRefitMoments::Part& part, std::int64_t dim) {
  for (std::vector<double>* m : {&part.cc, &part.ss}) {
    if (!m->empty()) MirrorLowerTriangle(m->data(), dim);
  }
}

}  // namespace

bool HeldOutWindow(std::int64_t sequence, std::int64_t windows) {
  if (windows >= 4) return sequence % 4 == 3;
  return windows >= 2 && sequence == windows - 1;
}

void OutputRefitMoments::Part::Merge(Part&& other) {
  tokens += other.tokens;
  AddInto(cc, std::move(other.cc));
  AddInto(cs, std::move(other.cs));
  AddInto(ss, std::move(other.ss));
}

void OutputRefitMoments::Merge(OutputRefitMoments&& other) {
  if (dim == 0) dim = other.dim;
  fit.Merge(std::move(other.fit));
  held_out.Merge(std::move(other.held_out));
}

void OutputRefitCollector::Keep(std::int64_t sequence, const FloatView& c) {
  Kept kept;
  kept.count = static_cast<std::size_t>(c.size());
  const std::uint64_t bytes = kept.count * sizeof(float);
  if (memory_.Take(bytes)) {
    kept.rows.assign(c.data, c.data + c.size());
  } else {
    kept.offset = spill_.Append(c.data, bytes);
    kept.spilled = true;
  }
  source_[sequence] = std::move(kept);
}

const std::vector<float>& OutputRefitCollector::Rows(Kept& kept) {
  if (!kept.spilled) return kept.rows;
  read_back_.resize(kept.count);
  spill_.Read(kept.offset, read_back_.data(), kept.count * sizeof(float));
  return read_back_;
}

void OutputRefitCollector::AccumulatePart(const AttentionCapture& capture, const float* s,
                                          bool held_out) {
  const FloatView& c = capture.context;
  const std::int64_t B = c.shape.at(0), T = c.shape.at(1), dim = c.shape.at(2);
  // Row (b, t) is token t of sequence capture.sequence + b. The part's windows of the batch are
  // summed in one product: per window, the [dim, dim] additions into the double sums cost as
  // much as the products at 256-token windows.
  std::vector<std::int64_t> windows;
  for (std::int64_t b = 0; b < B; ++b) {
    if (HeldOutWindow(capture.sequence + b, windows_) == held_out) windows.push_back(b);
  }
  if (windows.empty()) return;
  const std::int64_t rows = static_cast<std::int64_t>(windows.size()) * T;
  const float *part_c = c.data + windows.front() * T * dim, *part_s = s + windows.front() * T * dim;
  if (windows.back() - windows.front() + 1 != static_cast<std::int64_t>(windows.size())) {
    gathered_.clear();  // not side by side: copied so (c_c rows, then c_s rows)
    for (const float* from : {c.data, s}) {
      for (std::int64_t b : windows)
        gathered_.insert(gathered_.end(), from + b * T * dim, from + (b + 1) * T * dim);
    }
    part_c = gathered_.data();
    part_s = gathered_.data() + rows * dim;
  }
  Accumulate(part_c, part_s, rows, dim, scratch_, held_out ? moments_.held_out : moments_.fit);
}

void OutputRefitCollector::Observe(const AttentionCapture& capture) {
  const FloatView& c = capture.context;
  if (!converted_) {
    Keep(capture.sequence, c);
    return;
  }
  const auto kept = source_.find(capture.sequence);
  if (kept == source_.end() || static_cast<std::int64_t>(kept->second.count) != c.size()) {
    Fail("calibration",
         "refit: batch " + std::to_string(capture.sequence) + " differs between the two runs");
  }
  moments_.dim = c.shape.at(2);
  const std::vector<float>& s = Rows(kept->second);
  for (const bool held_out : {false, true}) AccumulatePart(capture, s.data(), held_out);
  if (!kept->second.spilled) memory_.Give(kept->second.count * sizeof(float));
  source_.erase(kept);
}

OutputRefitMoments OutputRefitCollector::Take() {
  if (!source_.empty())
    Fail("calibration", "refit: a batch of the layer before the pass was not run after it");
  MirrorSymmetric(moments_.fit, moments_.dim);
  MirrorSymmetric(moments_.held_out, moments_.dim);
  return std::exchange(moments_, OutputRefitMoments());
}

}  // namespace kvfold
