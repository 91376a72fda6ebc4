// Cutting a token stream into the fixed windows that evaluation and calibration run over
// (kvfold-ppl-v1: consecutive, non-overlapping, incomplete tail dropped).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace kvfold {

using TokenWindow = std::vector<std::int32_t>;

// The first `max_windows` (all when < 0) complete windows of `window` tokens. Throws Error
// naming `source` when not even one window fits.
std::vector<TokenWindow> CutWindows(const std::vector<std::int32_t>& tokens, int window,
                                    int max_windows, const std::string& source);

// Appends the model input for `window` under kvfold-ppl-v1, [bos] + window[0..W-2]: fed this,
// the model predicts every token of the window, the first from BOS alone.
void AppendModelInput(const TokenWindow& window, std::int32_t bos, std::vector<std::int32_t>& out);

}  // namespace kvfold
