// --calib in the forms users have: text, JSON Lines of documents or ids, NumPy .npy ids. The .npy
// files are built byte by byte from NumPy's format description (test::NpyBytes), not by kvfold.
#include "calib/calibration_input.h"

#include <algorithm>
#include <catch2/catch.hpp>
#include <cstring>
#include <nlohmann/json.hpp>

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

// Hostile .npy and JSON Lines input (formats/token_ids.h parses the bytes; tests/formats has the
// parser's own cases): each is one clean Error naming the file, never a read past the data, a
// hang or another exception type.
namespace {

// A version 1.0 .npy file whose header is `header` as written, padded as NumPy pads it.
std::string NpyWithHeader(std::string header, const std::string& data) {
  while ((10 + header.size() + 1) % 64 != 0) header += ' ';
  header += '\n';
  return std::string("\x93NUMPY\x01\x00", 8) + static_cast<char>(header.size() & 0xff) +
         static_cast<char>(header.size() >> 8) + header + data;
}

std::string Int32s(const std::vector<std::int32_t>& v) {
  return std::string(reinterpret_cast<const char*>(v.data()), v.size() * sizeof(std::int32_t));
}

}  // namespace

TEST_CASE("an .npy shape whose byte size overflows is refused before any read",
          "[calib][input][hostile][shared]") {
  const auto tok = Stories();
  test::TempDir dir;
  auto check = [&](const std::string& shape) {
    test::WriteBytes(dir.File("big.npy"), test::NpyBytes<std::int32_t>("<i4", shape, {1, 2}));
    CHECK(ErrorOf(dir.File("big.npy"), *tok) ==
          dir.File("big.npy") + ": .npy shape is too large (its size in bytes overflows 64 bits)");
  };
  check("(4611686018427387906,)");    // 4 x (2^62 + 2) wraps around to the 8 data bytes
  check("(4294967296, 4294967296)");  // 2^64 elements wrap around to 0
}

TEST_CASE("an .npy header is read as the Python dict NumPy writes and nothing else",
          "[calib][input][hostile][shared]") {
  const auto tok = Stories();
  test::TempDir dir;
  const std::string file = dir.File("h.npy");
  // Any exception is caught, so that one case the old reader threw on does not hide the others.
  auto outcome = [&](const std::string& header, const std::string& data) -> std::string {
    test::WriteBytes(file, NpyWithHeader(header, data));
    try {
      LoadCalibrationTokens(file, *tok, 512);
    } catch (const Error& e) {
      return e.what();
    } catch (const std::exception& e) {
      return std::string("not a kvfold::Error: ") + e.what();
    }
    return "accepted";
  };
  auto check = [&](const std::string& shape_and_more, const std::string& data,
                   const std::string& message) {
    CHECK(outcome("{'descr': '<i4', 'fortran_order': False, " + shape_and_more, data) ==
          file + ": .npy header: " + message);
  };
  const std::string two = Int32s({1, 2});
  check("'shape': (-1,-4096) }", Int32s(std::vector<std::int32_t>(4096, 1)),
        "'shape' has a negative dimension");  // (-1) x (-4096) = 4096 was accepted
  check("'shape': (2,), 'extra': 1}", two,
        "unknown key 'extra' (a .npy header has 'descr', 'fortran_order', 'shape')");
  check("'shape': (2,), 'descr': '<f4'}", two, "'descr' is given twice");  // the first was read
  // What NumPy itself may write or read is accepted: double quotes, another order, new lines.
  CHECK(outcome("{\"shape\": (1, 2),\n \"fortran_order\": False, \"descr\": \"<i4\"}", two) ==
        "accepted");
  const std::string form = "'shape' must be a tuple of non-negative integers, like (6,) or (2, 3)";
  check("'shape': (abc,) }", two, form);  // was exit 3 ("internal: stoll")
  check("'shape': 4096 }", two, form);    // no parentheses: looped forever (so checked last)
}

TEST_CASE("JSON Lines ids that are not ids are reported as written in the file",
          "[calib][input][hostile][shared]") {
  const auto tok = Stories();
  test::TempDir dir;
  auto check = [&](const std::string& line, const std::string& message) {
    test::WriteBytes(dir.File("ids.jsonl"), "[1, 2]\n" + line + "\n");
    CHECK(ErrorOf(dir.File("ids.jsonl"), *tok) == dir.File("ids.jsonl") + ": line 2: " + message);
  };
  check("[18446744073709551615]",  // was "token id -1"
        "token id 18446744073709551615 is outside the model's vocabulary of 512");
  check("{\"ids\": [99999999999999999999]}",
        "token id 99999999999999999999 is outside the model's vocabulary of 512");
  check("[1e3]", "token id 1e3 is not an integer");
  check("{\"input_ids\": [2.5]}", "token id 2.5 is not an integer");
}

TEST_CASE("ids the tokenizer gives outside the model's vocabulary name the text",
          "[calib][input][hostile][shared]") {
  const auto tok = Stories();  // 512 pieces, against a model of 100 embeddings
  test::TempDir dir;
  const std::string prefix = "the tokenizer " + tok->path() + " gives token id ";
  const std::string suffix =
      ", outside the model's vocabulary of 100 (tokenizer and model do not match?)";
  auto check = [&](const std::string& name, const std::string& bytes, const std::string& where) {
    test::WriteBytes(dir.File(name), bytes);
    std::string message = "accepted";
    try {
      LoadCalibrationTokens(dir.File(name), *tok, 100);
    } catch (const Error& e) {
      message = e.what();
    }
    CHECK(message.rfind(dir.File(name) + where + ": " + prefix, 0) == 0);
    CHECK(message.size() > suffix.size());
    CHECK(message.compare(message.size() - suffix.size(), suffix.size(), suffix) == 0);
  };
  check("calib.txt", "Once upon a time there was a little girl.", "");
  check("docs.jsonl", "\n{\"text\": \"Once upon a time there was a girl.\"}\n", ": line 2");
  // Evaluation text (convert --eval) goes through the same check.
  CHECK_THROWS_WITH(EncodeTextFile(dir.File("calib.txt"), *tok, 100),
                    Catch::StartsWith(dir.File("calib.txt") + ": " + prefix));
}

TEST_CASE("JSON Lines documents are encoded in file order, on threads, as far as asked",
          "[calib][input][shared]") {
  const auto tok = Stories();
  test::TempDir dir;
  // TinyStories' evaluation text, one document per line of it.
  const std::string text = LoadText(test::SharedPath("text/tinystories/eval.txt"));
  std::string jsonl;
  std::size_t documents = 0;
  for (std::size_t at = 0, end; at < text.size(); at = end + 1) {
    end = std::min(text.find('\n', at), text.size());
    if (end == at) continue;
    jsonl += nlohmann::json{{"text", text.substr(at, end - at)}}.dump() + "\n";
    ++documents;
  }
  REQUIRE(documents > 200);
  test::WriteBytes(dir.File("docs.jsonl"), jsonl);
  const std::vector<std::int32_t> whole =
      LoadCalibrationTokens(dir.File("docs.jsonl"), *tok, 512).tokens;
  CHECK((LoadCalibrationTokens(dir.File("docs.jsonl"), *tok, 512, 0, 4).tokens == whole));
  const std::vector<std::int32_t> head =
      LoadCalibrationTokens(dir.File("docs.jsonl"), *tok, 512, 1000, 2).tokens;
  CHECK(head.size() >= 1000);
  CHECK(head.size() < whole.size() / 2);  // later documents are not encoded
  CHECK(std::equal(head.begin(), head.end(), whole.begin()));
  // Lines after the ids asked for are still parsed and checked.
  test::WriteBytes(dir.File("bad_end.jsonl"), jsonl + "{oops\n");
  CHECK_THROWS_WITH(
      LoadCalibrationTokens(dir.File("bad_end.jsonl"), *tok, 512, 1000, 2),
      dir.File("bad_end.jsonl") + ": line " + std::to_string(documents + 1) + ": not valid JSON");
  // A document's error comes before a later line's, though documents are encoded in batches.
  test::WriteBytes(dir.File("both.jsonl"), "{\"text\": \"Once upon a time\"}\n{oops\n");
  CHECK_THROWS_WITH(LoadCalibrationTokens(dir.File("both.jsonl"), *tok, 100, 0, 2),
                    Catch::StartsWith(dir.File("both.jsonl") + ": line 1: the tokenizer "));
}
