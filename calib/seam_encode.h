// Encoding a long text in pieces with the ids of one Encode of the whole, for sentencepiece models
// (calib/sentencepiece_tokenizer.h). sentencepiece encodes a text in one call with ~100 bytes of
// memory per byte of text (a 45 MB calibration file: 4.6 GB and 43 s, to use its first 16384
// tokens; docs/results.md, "Long texts in pieces"), and kvfold-ppl-v1 encodes the whole file.
//
// A seam is a single ASCII space between two printable ASCII characters, "x y". The text is cut
// there and the space dropped: the piece after it, "y...", gets sentencepiece's dummy prefix "▁",
// which is what the space becomes in the whole text ("x▁y"), and normalisation ends the piece
// before it at "x". The ids of the two pieces are then those of the whole when
//   - no vocabulary piece holds "▁" after another character (no merge reaches across the seam
//     into "▁y..."; whitespace-only pieces such as "▁▁" are fine): checked once per tokenizer;
//   - normalisation treats the seam as it does in the whole (dummy prefix on, no rule spanning
//     the space): checked at each seam, on the 64 bytes either side (one Encode of those against
//     the two halves').
// A seam that fails its check is skipped; after kMaxFailedSeams failures in a row the rest of the
// text is encoded in one call, as before.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <string_view>
#include <vector>

namespace kvfold {

using EncodeFn = std::function<std::vector<std::int32_t>(std::string_view)>;

struct SeamEncoding {
  std::vector<std::int32_t> ids;
  std::size_t seams = 0;       // cuts used
  std::size_t bytes_read = 0;  // of the text, encoded
};

// The ids of encode(text), cut at seams about every `piece_bytes` bytes, stopping at the first
// seam after at least `min_ids` ids (0: the whole text). The ids are a prefix of encode(text)'s,
// all of them when the text ends first.
SeamEncoding EncodeAtSeams(std::string_view text, std::size_t min_ids, std::size_t piece_bytes,
                           const EncodeFn& encode);

// Whether no piece holds "▁" (U+2581) after a character that is not "▁".
bool PiecesStopAtSpaces(const std::vector<std::string_view>& pieces);

}  // namespace kvfold
