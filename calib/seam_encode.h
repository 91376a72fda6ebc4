// Encoding a long text in pieces with the ids of one Encode of the whole, for sentencepiece models
// (calib/sentencepiece_tokenizer.h) and tokenizer.json BPE models (calib/hf_tokenizer.h). Both
// encode a text in one call with 45-100 bytes of memory per byte of text (a 45 MB calibration
// file: 4.6 GB and 43 s with sentencepiece, to use its first 16384 tokens; docs/results.md,
// "Long texts in pieces"), and kvfold-ppl-v1 encodes the whole file.
//
// A seam is a single ASCII space between two printable ASCII characters, "x y". The text is cut
// there in one of two ways, whichever encodes the seam as the whole text does:
//   - the space dropped: the piece after it, "y...", gets the encoder's prefix for a text's start
//     ("▁": sentencepiece's dummy prefix, a Prepend normalizer), which is what the space becomes
//     in the whole ("x▁y");
//   - the space kept at the start of the piece after it, " y...": byte-level BPE, whose
//     pre-tokenizer makes it "Ġy" in both, and normalizers that make a space "▁" (Gemma).
// The ids of the two pieces are then those of the whole when
//   - no token can span the cut: no vocabulary piece holds x, the space symbol ("▁" or "Ġ"),
//     then y or its end (CrossingSeams: such seams are not cut). BPE merges, and a unigram
//     model's pieces, are then on one side or the other;
//   - every other step treats the seam as it does in the whole (normalisation, added tokens,
//     pre-tokenizer splits): checked at each seam on `context` bytes either side, one Encode of
//     those against the two halves'. The context covers the longest added token, so that one
//     beside the seam (lstrip/rstrip) is seen whole. A pre-tokenizer's regex must not match
//     across "x " for more than the context: the GPT-2, Llama 3 and Qwen patterns match no
//     string that holds a non-space followed by a space.
// A seam that fails its check is skipped; after kMaxFailedSeams failures in a row the rest of the
// text is encoded in one call, as before.
//
// Pieces are independent, so several threads encode them at once. Where the pieces end does not
// depend on the thread count, nor do the ids: threads change only how many pieces are encoded
// ahead of the stopping point (and left unused) when a prefix is asked for.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <set>
#include <string_view>
#include <utility>
#include <vector>

namespace kvfold {

using EncodeFn = std::function<std::vector<std::int32_t>(std::string_view)>;

struct SeamOptions {
  std::size_t piece_bytes = 256 << 10;  // a piece ends at the first seam this far from its start
                                        // (PieceBytes)
  std::size_t context = 64;             // bytes either side of a seam in its check
  // Seams "x y" not cut, as (x, y), or (x, 0) for x before any y (CrossingSeams).
  std::set<std::pair<char, char>> crossing;
  int threads = 1;  // pieces encoded at once (`encode` must allow concurrent calls)
};

struct SeamEncoding {
  std::vector<std::int32_t> ids;
  std::size_t seams = 0;       // cuts used
  std::size_t bytes_read = 0;  // of the text, encoded
};

// The ids of encode(text), cut at seams, stopping at the first seam after at least `min_ids`
// ids (0: the whole text). The ids are a prefix of encode(text)'s, all of them when the text
// ends first. An exception from `encode` on any thread is rethrown here.
SeamEncoding EncodeAtSeams(std::string_view text, std::size_t min_ids, const SeamOptions& options,
                           const EncodeFn& encode);

// What a tokenizer's EncodePrefix does with it: a text longer than one piece (PieceBytes) is
// encoded at seams, checked on `context` bytes either side; `crossing()` (CrossingSeams of the
// vocabulary) is asked only then. A shorter text is encoded in one call.
std::vector<std::int32_t> EncodeInPieces(
    std::string_view text, std::size_t min_ids, int threads, std::size_t context,
    const std::function<std::set<std::pair<char, char>>()>& crossing, const EncodeFn& encode);

// The piece size for `threads` threads to encode a text of `text_bytes` bytes, of which `min_ids`
// ids are asked for (0: all): what is to be encoded (min_ids guessed at 4 bytes each) in two
// pieces per thread at least, a multiple of the threads, between 32 KiB and 256 KiB (~25 MB of
// sentencepiece's memory).
// It changes the time and the text read, never the ids: pieces give the whole text's.
std::size_t PieceBytes(std::size_t text_bytes, std::size_t min_ids, int threads);

// The seams a token could span: (x, y) for each vocabulary piece holding printable ASCII x, then
// "▁" (U+2581) or "Ġ" (U+0120, byte-level BPE's space), then printable ASCII y; (x, 0) where the
// piece ends after the space symbol.
std::set<std::pair<char, char>> CrossingSeams(const std::vector<std::string_view>& pieces);

}  // namespace kvfold
