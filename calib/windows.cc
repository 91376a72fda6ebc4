#include "calib/windows.h"

#include <algorithm>
#include <random>

#include "formats/error.h"

namespace kvfold {

std::vector<TokenWindow> CutWindows(const std::vector<std::int32_t>& tokens, int window,
                                    int max_windows, const std::string& source) {
  if (window < 2) Fail(source, "window must be at least 2 tokens, got " + std::to_string(window));
  std::size_t count = tokens.size() / static_cast<std::size_t>(window);
  if (max_windows >= 0 && count > static_cast<std::size_t>(max_windows)) count = max_windows;
  if (count == 0) {
    Fail(source, "text has " + std::to_string(tokens.size()) +
                     " tokens, fewer than one window of " + std::to_string(window));
  }
  std::vector<TokenWindow> out;
  out.reserve(count);
  for (std::size_t w = 0; w < count; ++w) {
    out.emplace_back(tokens.begin() + w * window, tokens.begin() + (w + 1) * window);
  }
  return out;
}

void AppendModelInput(const TokenWindow& window, std::int32_t bos, std::vector<std::int32_t>& out) {
  if (window.empty()) return;
  if (bos < 0) {
    out.insert(out.end(), window.begin(), window.end());
    return;
  }
  out.push_back(bos);
  out.insert(out.end(), window.begin(), window.end() - 1);
}

ScoredPositions ScoredPositionsOf(std::int32_t bos, std::int64_t from, std::int64_t window) {
  if (bos >= 0) return {from, window};
  return {std::max<std::int64_t>(from, 1) - 1, window - 1};
}

std::vector<TokenWindow> CopyTaskWindows(int count, int window, int vocab, std::uint64_t seed) {
  if (count <= 0) Fail("--copy", "needs a positive number of sequences");
  if (window < 4 || window % 2 != 0)
    Fail("--copy", "the window must be even and at least 4, got " + std::to_string(window));
  const int low = std::min(259, vocab / 2);
  if (vocab - low < 2) Fail("--copy", "vocabulary too small for the copy check");
  std::mt19937_64 rng(seed);  // its output sequence is fixed by the standard; the modulo keeps
                              // ids identical across standard libraries (bias: < 1e-15)
  const auto span = static_cast<std::uint64_t>(vocab - low);
  auto id = [&](std::mt19937_64& r) { return low + static_cast<int>(r() % span); };
  std::vector<TokenWindow> out(static_cast<std::size_t>(count));
  for (TokenWindow& w : out) {
    w.resize(static_cast<std::size_t>(window));
    for (int i = 0; i < window / 2; ++i)
      w[static_cast<std::size_t>(i)] = w[static_cast<std::size_t>(i + window / 2)] = id(rng);
  }
  return out;
}

}  // namespace kvfold
