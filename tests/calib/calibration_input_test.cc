// --calib in the forms users have: text, JSON Lines of documents or ids, NumPy .npy ids. The .npy
// files are built byte by byte from NumPy's format description (test::NpyBytes), not by kvfold.
#include "calib/calibration_input.h"

#include <catch2/catch.hpp>
#include <cstring>

#include "calib/text.h"
#include "calib/tokenizer.h"
#include "formats/error.h"
#include "tests/test_support.h"

using namespace kvfold;

namespace {

std::unique_ptr<Tokenizer> Stories() {
  return Tokenizer::Load(test::SharedPath("models/stories260K/tokenizer.model"));
}

std::string ErrorOf(const std::string& path, const Tokenizer& tok) {
  try {
    LoadCalibrationTokens(path, tok, 512);
  } catch (const Error& e) {
    return e.what();
  }
  return "accepted";
}

}  // namespace

TEST_CASE("calibration text and JSON Lines documents", "[calib][input][shared]") {
  const auto tok = Stories();
  test::TempDir dir;
  const std::string text = test::SharedPath("text/tinystories/eval.txt");
  const CalibrationTokens plain = LoadCalibrationTokens(text, *tok, 512);
  CHECK(plain.format == "text");
  CHECK(plain.tokens == tok->Encode(LoadText(text)));
  // Two documents, each encoded alone (no token spans the boundary), blank lines skipped.
  test::WriteBytes(
      dir.File("docs.jsonl"),
      "{\"text\": \"Once upon a time\"}\n\n{\"text\": \"there was a cat.\", \"id\": 2}\n");
  const CalibrationTokens docs = LoadCalibrationTokens(dir.File("docs.jsonl"), *tok, 512);
  CHECK(docs.format == "jsonl-text");
  std::vector<std::int32_t> expected = tok->Encode("Once upon a time");
  const std::vector<std::int32_t> second = tok->Encode("there was a cat.");
  expected.insert(expected.end(), second.begin(), second.end());
  CHECK(docs.tokens == expected);
}

TEST_CASE("pre-tokenized ids as JSON Lines and .npy are used as they are",
          "[calib][input][shared]") {
  const auto tok = Stories();
  test::TempDir dir;
  test::WriteBytes(dir.File("ids.jsonl"), "{\"input_ids\": [1, 2, 3]}\n[4, 5]\n{\"ids\": [6]}\n");
  const CalibrationTokens ids = LoadCalibrationTokens(dir.File("ids.jsonl"), *tok, 512);
  CHECK(ids.format == "jsonl-ids");
  CHECK(ids.tokens == std::vector<std::int32_t>{1, 2, 3, 4, 5, 6});
  test::WriteBytes(dir.File("a.npy"),
                   test::NpyBytes<std::int32_t>("<i4", "(2, 3)", {1, 2, 3, 4, 5, 511}));
  CHECK(LoadCalibrationTokens(dir.File("a.npy"), *tok, 512).tokens ==
        std::vector<std::int32_t>{1, 2, 3, 4, 5, 511});
  test::WriteBytes(dir.File("b.npy"), test::NpyBytes<std::int64_t>("<i8", "(4,)", {7, 8, 9, 10}));
  CHECK(LoadCalibrationTokens(dir.File("b.npy"), *tok, 512).tokens ==
        std::vector<std::int32_t>{7, 8, 9, 10});
}

TEST_CASE("bad calibration files name the file, the line and the problem",
          "[calib][input][shared]") {
  const auto tok = Stories();
  test::TempDir dir;
  auto check = [&](const std::string& name, const std::string& bytes, const std::string& message) {
    test::WriteBytes(dir.File(name), bytes);
    CHECK(ErrorOf(dir.File(name), *tok) == dir.File(name) + message);
  };
  check("x.jsonl", "{\"text\": \"a\"}\n[1, 2]\n",
        ": line 2: mixes documents and token ids; use one form per file");
  check("y.jsonl", "[1, 2]\n[3, 512]\n",
        ": line 2: token id 512 is outside the model's vocabulary of 512");
  check("z.jsonl", "[1, 2]\n{oops\n", ": line 2: not valid JSON");
  check("w.jsonl", "{\"content\": \"a\"}\n",
        ": line 1: expected {\"text\": \"...\"}, {\"input_ids\": [...]}, {\"ids\": [...]} or a "
        "list of ids");
  check("f.npy", test::NpyBytes<float>("<f4", "(2,)", {1.0f, 2.0f}),
        ": .npy dtype '<f4' is not token ids (expected little-endian int32 or int64)");
  check("o.npy", test::NpyBytes<std::int32_t>("<i4", "(2, 1)", {1, 2}, true),
        ": .npy array in Fortran order is not supported (save it with numpy's default C order)");
  check("s.npy", test::NpyBytes<std::int32_t>("<i4", "(3,)", {1, 2}),
        ": .npy data holds 2 elements, its shape says 3");
  check("n.npy", test::NpyBytes<std::int32_t>("<i4", "(2,)", {1, -1}),
        ": element 1: token id -1 is outside the model's vocabulary of 512");
  check("m.npy", "PK\x03\x04 not numpy", ": not a NumPy .npy file (bad magic)");
}
