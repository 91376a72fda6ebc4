// Long texts encoded in pieces cut at seams (calib/seam_encode.h) give the ids of one Encode of
// the whole: on every shared text with both shared sentencepiece vocabularies and with the real
// tokenizer.json files (byte-level Llama 3 and Qwen3, Llama 2's sentencepiece-style JSON, Gemma
// 3), cut every few KB so that each text has hundreds of seams; on several threads; and a seam
// whose halves encode differently, or that a vocabulary token could span, is not used.
#include "calib/seam_encode.h"

#include <algorithm>
#include <catch2/catch.hpp>
#include <stdexcept>
#include <string>

#include "calib/hf_tokenizer.h"
#include "calib/sentencepiece_tokenizer.h"
#include "calib/text.h"
#include "calib/tokenizer.h"
#include "tests/calib/real_tokenizer.h"
#include "tests/test_support.h"

using namespace kvfold;
using kvfold::test::RealTokenizer;
using kvfold::test::SharedPath;

namespace {

// The seams a tokenizer's vocabulary forbids (sentencepiece or tokenizer.json).
std::set<std::pair<char, char>> Crossing(const Tokenizer& tok) {
  if (const auto* spm = dynamic_cast<const SentencePieceTokenizer*>(&tok))
    return spm->CrossingSeams();
  return dynamic_cast<const HfTokenizer&>(tok).CrossingSeams();
}

// Cut every 4 KB, whole and a prefix, on 1 and several threads: the whole text's ids. Vectors of
// ids are compared as one bool (double parentheses): Catch2 would print every id.
void CheckCutsLikeWhole(const Tokenizer& tok, const std::string& text,
                        const std::vector<int>& thread_counts) {
  const std::vector<std::int32_t> whole = tok.Encode(text);
  const EncodeFn encode = [&](std::string_view s) { return tok.Encode(s); };
  SeamOptions options;
  options.piece_bytes = 4096;
  options.crossing = Crossing(tok);
  const SeamEncoding cut = EncodeAtSeams(text, 0, options, encode);
  CHECK(cut.seams > text.size() / 8192);  // cut about every 4 KB
  CHECK(cut.bytes_read == text.size());
  CHECK((cut.ids == whole));
  // Asked for 1000 ids: the first piece or two, a prefix of the whole's.
  const SeamEncoding prefix = EncodeAtSeams(text, 1000, options, encode);
  REQUIRE(prefix.ids.size() >= 1000);
  CHECK(prefix.bytes_read < 3 * 4096 + 256);
  CHECK(std::equal(prefix.ids.begin(), prefix.ids.end(), whole.begin()));
  // The same pieces and ids on several threads, whole or a prefix.
  for (const int threads : thread_counts) {
    options.threads = threads;
    CHECK((EncodeAtSeams(text, 0, options, encode).ids == whole));
    const SeamEncoding prefix_threaded = EncodeAtSeams(text, 1000, options, encode);
    CHECK((prefix_threaded.ids == prefix.ids));
    CHECK(prefix_threaded.bytes_read == prefix.bytes_read);
    CHECK(prefix_threaded.seams == prefix.seams);
  }
  // The tokenizer's own, in pieces of 256 KiB.
  const std::vector<std::int32_t> head = tok.EncodePrefix(text, 1000, 1);
  REQUIRE(head.size() >= 1000);
  CHECK(std::equal(head.begin(), head.end(), whole.begin()));
  CHECK((tok.EncodePrefix(text, 0, 2) == whole));
}

}  // namespace

TEST_CASE("a text encoded at seams has the ids of the whole text", "[tokenizer][shared]") {
  for (const char* model : {"stories260K", "micro-mha"}) {
    const auto tok =
        Tokenizer::Load(SharedPath(std::string("models/") + model + "/tokenizer.model"));
    // No piece holds "▁" between two printable ASCII characters: every seam may be cut.
    CHECK(Crossing(*tok).empty());
    for (const char* file : {"text/tinystories/eval.txt", "text/wikitext-2/test.raw.txt",
                             "text/tinyshakespeare/train.txt"}) {
      INFO(model << " " << file);
      CheckCutsLikeWhole(*tok, LoadText(SharedPath(file)), {2, 3, 8});
    }
  }
}

TEST_CASE("a text encoded at seams with a tokenizer.json has the ids of the whole text",
          "[tokenizer][hf][shared]") {
  // Byte-level BPE keeps the space in the next piece ("Ġy"); Llama 2's JSON prepends "▁" to a
  // text, as sentencepiece does, and drops it; Gemma 3 makes the kept space "▁".
  for (const char* package :
       {"tokenizer-llama3_1", "tokenizer-qwen3", "tokenizer-llama2", "tokenizer-gemma3"}) {
    const auto tok = Tokenizer::Load(RealTokenizer(package));
    for (const char* file : {"text/wikitext-2/test.raw.txt", "text/tinyshakespeare/train.txt"}) {
      INFO(package << " " << file);
      CheckCutsLikeWhole(*tok, LoadText(SharedPath(file)), {2});
    }
  }
}

TEST_CASE("a seam a vocabulary token could span is not cut", "[tokenizer][hf]") {
  // Gemma 3's vocabulary holds ">▁</": BPE merges across the space in "a> </a".
  const auto gemma = Tokenizer::Load(RealTokenizer("tokenizer-gemma3"));
  CHECK(Crossing(*gemma) == std::set<std::pair<char, char>>{{'>', '<'}});
  const std::vector<std::int32_t> spanned = gemma->Encode("a> </a");
  const std::vector<std::int32_t> left = gemma->Encode("a>"), right = gemma->Encode(" </a");
  std::vector<std::int32_t> halves = left;
  halves.insert(halves.end(), right.begin(), right.end());
  CHECK(spanned != halves);
  // A text of such seams only, and one with others beside them: cut where allowed, exact.
  std::string html;
  for (int i = 0; i < 3000; ++i) html += i % 3 ? "a> </a" : "a>x y</a";
  SeamOptions options;
  options.piece_bytes = 1024;
  options.crossing = Crossing(*gemma);
  const EncodeFn encode = [&](std::string_view s) { return gemma->Encode(s); };
  const SeamEncoding cut = EncodeAtSeams(html, 0, options, encode);
  CHECK(cut.seams > 10);
  CHECK((cut.ids == gemma->Encode(html)));
  // "▁" or "Ġ" after a character: before y, or at the end; "▁▁" spans no single-space seam.
  CHECK(CrossingSeams({"a\xe2\x96\x81"
                       "b",
                       "c\xc4\xa0", "\xe2\x96\x81\xe2\x96\x81",
                       "d\xe2\x96\x81\xe2\x96\x81"
                       "e"}) == std::set<std::pair<char, char>>{{'a', 'b'}, {'c', 0}});
}

TEST_CASE("a seam whose halves encode differently is not cut", "[tokenizer]") {
  // One id per byte, the first byte of a text marked: neither the space dropped nor kept gives
  // the whole text's ids at any seam.
  const EncodeFn marked = [](std::string_view s) {
    std::vector<std::int32_t> ids(s.begin(), s.end());
    if (!ids.empty()) ids[0] += 1000;
    return ids;
  };
  std::string text;
  for (int i = 0; i < 2000; ++i) text += "word" + std::to_string(i) + " ";
  SeamOptions options;
  options.piece_bytes = 512;
  const SeamEncoding cut = EncodeAtSeams(text, 0, options, marked);
  CHECK(cut.seams == 0);
  CHECK((cut.ids == marked(text)));
  // Without the mark the space kept in the next piece gives the whole's bytes: cut there.
  const EncodeFn bytes = [](std::string_view s) {
    return std::vector<std::int32_t>(s.begin(), s.end());
  };
  const SeamEncoding kept = EncodeAtSeams(text, 0, options, bytes);
  CHECK(kept.seams > 10);
  CHECK((kept.ids == bytes(text)));
}

TEST_CASE("pieces encoded on several threads are joined in text order", "[tokenizer]") {
  // One id per word (its index), so that a piece out of place shows; "w<i>" words have no seam
  // check to fail (an encoder with a dummy prefix: the space dropped at a seam comes back).
  std::string text;
  for (int i = 0; i < 5000; ++i) text += (i ? " w" : "w") + std::to_string(i);
  const EncodeFn words = [](std::string_view s) {
    std::vector<std::int32_t> ids;
    for (std::size_t at = s.find('w'); at != std::string_view::npos; at = s.find('w', at + 1))
      ids.push_back(std::stoi(std::string(s.substr(at + 1, s.find(' ', at) - at - 1))));
    return ids;
  };
  const std::vector<std::int32_t> whole = words(text);
  SeamOptions options;
  options.piece_bytes = 256;
  for (const int threads : {1, 2, 7}) {
    options.threads = threads;
    const SeamEncoding cut = EncodeAtSeams(text, 0, options, words);
    CHECK(cut.seams > 100);
    CHECK((cut.ids == whole));
    const SeamEncoding prefix = EncodeAtSeams(text, 3000, options, words);
    CHECK(prefix.ids.size() >= 3000);
    CHECK(prefix.ids.size() < 3000 + 64);  // stops at the first seam past 3000 ids
    CHECK(std::equal(prefix.ids.begin(), prefix.ids.end(), whole.begin()));
  }
}

TEST_CASE("pieces: two per thread at least, a multiple of the threads, 32 to 256 KiB",
          "[tokenizer]") {
  CHECK(PieceBytes(800000, 0, 2) == 200000);   // an 800 KB text on 2 threads: 4 pieces
  CHECK(PieceBytes(1300000, 0, 2) == 216666);  // 1.3 MB: 6 pieces, not 5 of 256 KiB
  CHECK(PieceBytes(std::size_t{1} << 30, 0, 1) == 256 << 10);     // never more
  CHECK(PieceBytes(std::size_t{1} << 30, 16384, 2) == 32 << 10);  // 64 KB wanted: read little
  CHECK(PieceBytes(std::size_t{1} << 30, 1 << 20, 4) == 256 << 10);
  CHECK(PieceBytes(1000, 0, 8) == 32 << 10);  // a short text stays whole (no cut below 32 KiB)
}

TEST_CASE("an encoder's error on one thread reaches the caller", "[tokenizer]") {
  std::string text;
  for (int i = 0; i < 2000; ++i) text += (i ? " w" : "w") + std::to_string(i);
  const EncodeFn fails_late = [](std::string_view s) -> std::vector<std::int32_t> {
    if (s.size() > 200 && s.find("w1900") != std::string_view::npos)
      throw std::runtime_error("bad piece");
    return std::vector<std::int32_t>(1, static_cast<std::int32_t>(s.size()));
  };
  // Only whole pieces fail (the seam checks encode 129 bytes at most), on whichever thread.
  SeamOptions options;
  options.piece_bytes = 512;
  options.threads = 4;
  CHECK_THROWS_WITH(EncodeAtSeams(text, 0, options, fails_late), "bad piece");
}
