#include "calib/seam_encode.h"

#include <algorithm>
#include <cmath>
#include <string>

#include "formats/parallel_each.h"

namespace kvfold {
namespace {

constexpr std::string_view kSpaceSymbols[] = {"\xe2\x96\x81", "\xc4\xa0"};  // ▁ U+2581, Ġ U+0120
constexpr int kMaxFailedSeams = 8;

bool Printable(char c) { return c > 0x20 && c < 0x7f; }

bool IsSeam(std::string_view text, std::size_t c, const SeamOptions& o) {
  if (c == 0 || c + 1 >= text.size() || text[c] != ' ') return false;
  const char x = text[c - 1], y = text[c + 1];
  return Printable(x) && Printable(y) && !o.crossing.count({x, y}) && !o.crossing.count({x, 0});
}

// A UTF-8 character starts at `i` (not a continuation byte).
bool StartsCharacter(std::string_view text, std::size_t i) {
  return i == 0 || i >= text.size() || (static_cast<unsigned char>(text[i]) & 0xc0) != 0x80;
}

// A cut at the space at `at`: the next piece starts after it (dropped) or at it (kept).
struct Seam {
  std::size_t at = std::string_view::npos;
  bool drop = true;
  std::size_t next() const { return drop ? at + 1 : at; }
};

// The seam encodes as in the whole: around it, one Encode equals the two halves'.
bool SeamHolds(std::string_view text, const Seam& seam, const SeamOptions& o,
               const EncodeFn& encode) {
  std::size_t begin = seam.at > o.context ? seam.at - o.context : 0;
  std::size_t end = std::min(text.size(), seam.at + 1 + o.context);
  while (!StartsCharacter(text, begin)) ++begin;
  while (!StartsCharacter(text, end)) --end;
  std::vector<std::int32_t> halves = encode(text.substr(begin, seam.at - begin));
  const std::vector<std::int32_t> after = encode(text.substr(seam.next(), end - seam.next()));
  halves.insert(halves.end(), after.begin(), after.end());
  return halves == encode(text.substr(begin, end - begin));
}

// The first seam at or after `from` that holds, space dropped or else kept; `at` is npos when
// none does (none left, or kMaxFailedSeams failed).
Seam NextSeam(std::string_view text, std::size_t from, const SeamOptions& o,
              const EncodeFn& encode) {
  int failed = 0;
  for (std::size_t c = from; c + 1 < text.size(); ++c) {
    if (!IsSeam(text, c, o)) continue;
    for (const bool drop : {true, false}) {
      if (SeamHolds(text, {c, drop}, o, encode)) return {c, drop};
    }
    if (++failed == kMaxFailedSeams) break;
  }
  return {};
}

// A piece of the text: [begin, end), ending at a seam (the next piece begins at `next`) or at
// the end of the text.
struct Piece {
  std::size_t begin = 0, end = 0;
  bool at_seam = false;
  std::size_t next = 0;
};

// Up to `count` pieces from `start`, each ending at the first seam that holds piece_bytes on.
std::vector<Piece> NextPieces(std::string_view text, std::size_t start, std::size_t count,
                              const SeamOptions& o, const EncodeFn& encode) {
  std::vector<Piece> pieces;
  while (start < text.size() && pieces.size() < count) {
    const Seam seam = start + o.piece_bytes < text.size()
                          ? NextSeam(text, start + o.piece_bytes, o, encode)
                          : Seam{};
    if (seam.at == std::string_view::npos) {
      pieces.push_back({start, text.size(), false, text.size()});
      break;
    }
    pieces.push_back({start, seam.at, true, seam.next()});
    start = seam.next();
  }
  return pieces;
}

// encode() of every piece, on up to `threads` threads taking the next piece as they finish one.
std::vector<std::vector<std::int32_t>> EncodeEach(std::string_view text,
                                                  const std::vector<Piece>& pieces,
                                                  const EncodeFn& encode, int threads) {
  std::vector<std::vector<std::int32_t>> ids(pieces.size());
  ParallelEach(pieces.size(), threads, [&](std::size_t i) {
    ids[i] = encode(text.substr(pieces[i].begin, pieces[i].end - pieces[i].begin));
  });
  return ids;
}

// How many pieces to encode next for `min_ids` ids: what the ids per byte read so far (1 id per 4
// bytes before any) say is still needed, one at least, `threads` at most. For the whole text
// (min_ids 0), 4 per thread: few idle ends of a batch, and no second copy of every piece's ids.
std::size_t PiecesToEncode(const SeamEncoding& done, std::size_t min_ids, const SeamOptions& o) {
  if (min_ids == 0) return 4 * static_cast<std::size_t>(std::max(1, o.threads));
  const double bytes_per_id =
      done.ids.empty() ? 4.0 : static_cast<double>(done.bytes_read) / done.ids.size();
  const double bytes = static_cast<double>(min_ids - done.ids.size()) * bytes_per_id;
  const double pieces = std::ceil(bytes / static_cast<double>(o.piece_bytes));
  return static_cast<std::size_t>(
      std::clamp(pieces, 1.0, static_cast<double>(std::max(1, o.threads))));
}

}  // namespace

SeamEncoding EncodeAtSeams(std::string_view text, std::size_t min_ids, const SeamOptions& options,
                           const EncodeFn& encode) {
  SeamEncoding out;
  std::size_t start = 0;
  bool ended = false;
  while (!ended && start < text.size() && (min_ids == 0 || out.ids.size() < min_ids)) {
    const std::vector<Piece> pieces =
        NextPieces(text, start, PiecesToEncode(out, min_ids, options), options, encode);
    const std::vector<std::vector<std::int32_t>> ids =
        EncodeEach(text, pieces, encode, options.threads);
    // In order, stopping where one piece at a time would have: the same ids for any `threads`.
    for (std::size_t i = 0; i < pieces.size(); ++i) {
      if (min_ids != 0 && out.ids.size() >= min_ids) break;
      out.ids.insert(out.ids.end(), ids[i].begin(), ids[i].end());
      out.bytes_read = pieces[i].end;
      ended = !pieces[i].at_seam;
      if (ended) break;
      ++out.seams;
      start = pieces[i].next;
    }
  }
  return out;
}

std::vector<std::int32_t> EncodeInPieces(
    std::string_view text, std::size_t min_ids, int threads, std::size_t context,
    const std::function<std::set<std::pair<char, char>>()>& crossing, const EncodeFn& encode) {
  SeamOptions options;
  options.piece_bytes = PieceBytes(text.size(), min_ids, threads);
  if (text.size() <= options.piece_bytes) return encode(text);
  options.context = context;
  options.crossing = crossing();
  options.threads = threads;
  return EncodeAtSeams(text, min_ids, options, encode).ids;
}

std::size_t PieceBytes(std::size_t text_bytes, std::size_t min_ids, int threads) {
  constexpr std::size_t kMin = 32 << 10, kMax = 256 << 10;
  const std::size_t wanted = min_ids == 0 ? text_bytes : std::min(text_bytes, 4 * min_ids);
  const std::size_t t = static_cast<std::size_t>(std::max(1, threads));
  // Two per thread at least, as many as kMax needs, rounded up to a multiple of the threads.
  const std::size_t pieces = (std::max(2 * t, (wanted + kMax - 1) / kMax) + t - 1) / t * t;
  return std::clamp(wanted / pieces, kMin, kMax);
}

std::set<std::pair<char, char>> CrossingSeams(const std::vector<std::string_view>& pieces) {
  std::set<std::pair<char, char>> crossing;
  for (const std::string_view piece : pieces) {
    for (const std::string_view space : kSpaceSymbols) {
      for (std::size_t at = piece.find(space, 1); at != std::string_view::npos;
           at = piece.find(space, at + 1)) {
        const std::size_t after = at + space.size();
        if (!Printable(piece[at - 1])) continue;
        if (after == piece.size()) {
          crossing.insert({piece[at - 1], 0});
        } else if (Printable(piece[after])) {
          crossing.insert({piece[at - 1], piece[after]});
        }
      }
    }
  }
  return crossing;
}

}  // namespace kvfold
