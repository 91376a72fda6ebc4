// Long texts encoded in pieces cut at seams (calib/seam_encode.h) give the ids of one Encode of
// the whole: on every shared text with both shared sentencepiece vocabularies, cut every few KB so
// that each text has hundreds of seams; and a seam whose halves encode differently is not used.
#include "calib/seam_encode.h"

#include <algorithm>
#include <catch2/catch.hpp>
#include <string>

#include "calib/sentencepiece_tokenizer.h"
#include "calib/text.h"
#include "calib/tokenizer.h"
#include "tests/test_support.h"

using namespace kvfold;
using kvfold::test::SharedPath;

TEST_CASE("a text encoded at seams has the ids of the whole text", "[tokenizer][shared]") {
  for (const char* model : {"stories260K", "micro-mha"}) {
    const auto tok =
        Tokenizer::Load(SharedPath(std::string("models/") + model + "/tokenizer.model"));
    // Both shared vocabularies can be cut (only whitespace runs hold "▁" after a character).
    REQUIRE(dynamic_cast<const SentencePieceTokenizer&>(*tok).cuttable());
    const EncodeFn encode = [&](std::string_view s) { return tok->Encode(s); };
    for (const char* file : {"text/tinystories/eval.txt", "text/wikitext-2/test.raw.txt",
                             "text/tinyshakespeare/train.txt"}) {
      INFO(model << " " << file);
      const std::string text = LoadText(SharedPath(file));
      const std::vector<std::int32_t> whole = tok->Encode(text);
      const SeamEncoding cut = EncodeAtSeams(text, 0, 4096, encode);
      CHECK(cut.seams > text.size() / 8192);  // cut about every 4 KB
      CHECK(cut.bytes_read == text.size());
      CHECK(cut.ids == whole);
      // Asked for 1000 ids: the first piece or two, a prefix of the whole's.
      const SeamEncoding prefix = EncodeAtSeams(text, 1000, 4096, encode);
      REQUIRE(prefix.ids.size() >= 1000);
      CHECK(prefix.bytes_read < 3 * 4096 + 256);
      CHECK(std::equal(prefix.ids.begin(), prefix.ids.end(), whole.begin()));
      // The tokenizer's own, in pieces of 256 KiB.
      const std::vector<std::int32_t> head = tok->EncodePrefix(text, 1000);
      REQUIRE(head.size() >= 1000);
      CHECK(std::equal(head.begin(), head.end(), whole.begin()));
    }
  }
}

TEST_CASE("a seam whose halves encode differently is not cut", "[tokenizer]") {
  // One id per byte, and no dummy prefix: the dropped space would be lost at every seam.
  const EncodeFn bytes = [](std::string_view s) {
    return std::vector<std::int32_t>(s.begin(), s.end());
  };
  std::string text;
  for (int i = 0; i < 2000; ++i) text += "word" + std::to_string(i) + " ";
  const SeamEncoding cut = EncodeAtSeams(text, 0, 512, bytes);
  CHECK(cut.seams == 0);
  CHECK(cut.ids == bytes(text));
}

TEST_CASE("a vocabulary with \"▁\" after a character cannot be cut", "[tokenizer]") {
  CHECK(PiecesStopAtSpaces({"\xe2\x96\x81the", "\xe2\x96\x81\xe2\x96\x81", "ing", "<s>"}));
  CHECK_FALSE(PiecesStopAtSpaces({"\xe2\x96\x81the", "of\xe2\x96\x81the"}));
  CHECK_FALSE(PiecesStopAtSpaces({"\xe2\x96\x81the\xe2\x96\x81"}));
}
