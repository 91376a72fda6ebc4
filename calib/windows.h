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

// The retrieval (copy) check: `count` windows of `window` tokens (window even), each a run of
// window/2 random ids followed by the same run again, so the second half is predictable only by
// looking back. Ids are drawn uniformly from [min(259, vocab/2), vocab), above sentencepiece's
// control and byte pieces; deterministic in `seed`.
std::vector<TokenWindow> CopyTaskWindows(int count, int window, int vocab, std::uint64_t seed);

// First scored position of a copy window: the second copy's tokens after its first (which
// nothing in the window predicts).
inline std::int64_t CopyTaskScoredFrom(int window) { return window / 2 + 1; }

}  // namespace kvfold
