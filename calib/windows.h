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
// the model predicts every token of the window, the first from BOS alone. A tokenizer without
// BOS (bos < 0, Qwen) feeds the window itself, window[0..W-1]: position p predicts window[p + 1],
// so the first token is never scored (docs/formats.md, "Perplexity protocol").
void AppendModelInput(const TokenWindow& window, std::int32_t bos, std::vector<std::int32_t>& out);

// The positions of a model input whose predictions are scored, for windows of `window` tokens
// whose tokens from `from` on count: [from, window) with a BOS; [max(from, 1) - 1, window - 1)
// without one (position p then predicts token p + 1).
struct ScoredPositions {
  std::int64_t begin = 0;
  std::int64_t end = 0;
  std::int64_t count() const { return end - begin; }
};
ScoredPositions ScoredPositionsOf(std::int32_t bos, std::int64_t from, std::int64_t window);

// The token position p of a model input predicts: window[p] with a BOS, window[p + 1] without.
inline std::int64_t PredictedToken(std::int32_t bos, std::int64_t p) {
  return bos >= 0 ? p : p + 1;
}

// The retrieval (copy) check: `count` windows of `window` tokens (window even), each a run of
// window/2 random ids followed by the same run again, so the second half is predictable only by
// looking back. Ids are drawn uniformly from [min(259, vocab/2), vocab), above sentencepiece's
// control and byte pieces; deterministic in `seed`.
std::vector<TokenWindow> CopyTaskWindows(int count, int window, int vocab, std::uint64_t seed);

// First scored position of a copy window: the second copy's tokens after its first (which
// nothing in the window predicts).
inline std::int64_t CopyTaskScoredFrom(int window) { return window / 2 + 1; }

}  // namespace kvfold
