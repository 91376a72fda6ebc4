#include "calib/seam_encode.h"

#include <algorithm>
#include <string>

namespace kvfold {
namespace {

constexpr std::string_view kSpaceSymbol = "\xe2\x96\x81";  // ▁, U+2581
constexpr std::size_t kContext = 64;  // bytes either side of a seam in its check
constexpr int kMaxFailedSeams = 8;

bool Printable(char c) { return c > 0x20 && c < 0x7f; }

bool IsSeam(std::string_view text, std::size_t c) {
  return c > 0 && c + 1 < text.size() && text[c] == ' ' && Printable(text[c - 1]) &&
         Printable(text[c + 1]);
}

// A UTF-8 character starts at `i` (not a continuation byte).
bool StartsCharacter(std::string_view text, std::size_t i) {
  return i == 0 || i >= text.size() || (static_cast<unsigned char>(text[i]) & 0xc0) != 0x80;
}

// The seam at `c` encodes as in the whole: around it, one Encode equals the two halves'.
bool SeamHolds(std::string_view text, std::size_t c, const EncodeFn& encode) {
  std::size_t begin = c > kContext ? c - kContext : 0;
  std::size_t end = std::min(text.size(), c + 1 + kContext);
  while (!StartsCharacter(text, begin)) ++begin;
  while (!StartsCharacter(text, end)) --end;
  std::vector<std::int32_t> halves = encode(text.substr(begin, c - begin));
  const std::vector<std::int32_t> after = encode(text.substr(c + 1, end - c - 1));
  halves.insert(halves.end(), after.begin(), after.end());
  return halves == encode(text.substr(begin, end - begin));
}

// The first seam at or after `from` that holds, or npos (none, or kMaxFailedSeams failed).
std::size_t NextSeam(std::string_view text, std::size_t from, const EncodeFn& encode) {
  int failed = 0;
  for (std::size_t c = from; c + 1 < text.size(); ++c) {
    if (!IsSeam(text, c)) continue;
    if (SeamHolds(text, c, encode)) return c;
    if (++failed == kMaxFailedSeams) break;
  }
  return std::string_view::npos;
}

}  // namespace

SeamEncoding EncodeAtSeams(std::string_view text, std::size_t min_ids, std::size_t piece_bytes,
                           const EncodeFn& encode) {
  SeamEncoding out;
  std::size_t start = 0;
  while (start < text.size() && (min_ids == 0 || out.ids.size() < min_ids)) {
    const std::size_t c = start + piece_bytes < text.size()
                              ? NextSeam(text, start + piece_bytes, encode)
                              : std::string_view::npos;
    const std::size_t end = c == std::string_view::npos ? text.size() : c;
    const std::vector<std::int32_t> ids = encode(text.substr(start, end - start));
    out.ids.insert(out.ids.end(), ids.begin(), ids.end());
    out.bytes_read = end;
    if (c == std::string_view::npos) break;
    ++out.seams;
    start = c + 1;  // the space is the next piece's dummy prefix
  }
  return out;
}

bool PiecesStopAtSpaces(const std::vector<std::string_view>& pieces) {
  for (const std::string_view piece : pieces) {
    std::size_t i = 0;
    while (piece.substr(i, kSpaceSymbol.size()) == kSpaceSymbol) i += kSpaceSymbol.size();
    if (piece.find(kSpaceSymbol, i) != std::string_view::npos) return false;
  }
  return true;
}

}  // namespace kvfold
