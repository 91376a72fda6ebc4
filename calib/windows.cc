#include "calib/windows.h"

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
  out.push_back(bos);
  out.insert(out.end(), window.begin(), window.end() - 1);
}

}  // namespace kvfold
