// The pre-tokenized calibration readers on bytes: NumPy .npy headers as NumPy's format description
// defines them (a Python dict literal) and JSON Lines id lines, valid and hostile.
#include "formats/token_ids.h"

#include <catch2/catch.hpp>

#include "formats/error.h"
#include "tests/test_support.h"

using namespace kvfold;

namespace {

using Ids = std::vector<std::int32_t>;

// A .npy file of format version `major`.0 whose header is `header`, padded as NumPy pads it.
std::string NpyWithHeader(std::string header, const std::string& data, int major = 1) {
  const std::size_t preamble = major == 1 ? 10 : 12;
  while ((preamble + header.size() + 1) % 64 != 0) header += ' ';
  header += '\n';
  std::string out = std::string("\x93NUMPY", 6) + static_cast<char>(major) + '\0';
  for (std::size_t i = 0; i < preamble - 8; ++i)
    out += static_cast<char>((header.size() >> (8 * i)) & 0xff);
  return out + header + data;
}

std::string Int32s(const Ids& v) {
  return std::string(reinterpret_cast<const char*>(v.data()), v.size() * sizeof(std::int32_t));
}

std::string NpyError(const std::string& bytes) {
  try {
    ParseNpyTokenIds(bytes, 512, "t.npy");
  } catch (const Error& e) {
    return e.what();
  }
  return "accepted";
}

JsonLinesIds Lines(const std::string& bytes, std::vector<std::string>* documents = nullptr) {
  return ParseJsonLines(bytes, 512, "t.jsonl", [&](const std::string& where, const std::string& s) {
    if (documents != nullptr) documents->push_back(where + " " + s);
  });
}

std::string LinesError(const std::string& bytes) {
  try {
    Lines(bytes);
  } catch (const Error& e) {
    return e.what();
  }
  return "accepted";
}

}  // namespace

TEST_CASE(".npy: every integer dtype and shape in format versions 1 to 3", "[token_ids][npy]") {
  const std::vector<std::int16_t> i16{1, 511};
  const std::vector<std::uint16_t> u16{2, 3};
  const std::vector<std::uint32_t> u32{4, 5};
  const std::vector<std::int64_t> i64{6, 7, 8, 9};
  CHECK(ParseNpyTokenIds(test::NpyBytes("<i2", "(2,)", i16), 512, "t.npy") == Ids{1, 511});
  CHECK(ParseNpyTokenIds(test::NpyBytes("<u2", "(2,)", u16), 512, "t.npy") == Ids{2, 3});
  CHECK(ParseNpyTokenIds(test::NpyBytes("<u4", "(1, 2)", u32), 512, "t.npy") == Ids{4, 5});
  CHECK(ParseNpyTokenIds(test::NpyBytes("<i8", "(2, 2)", i64), 512, "t.npy") == Ids{6, 7, 8, 9});
  CHECK(ParseNpyTokenIds(test::NpyBytes("<i4", "()", Ids{10}), 512, "t.npy") == Ids{10});
  CHECK(ParseNpyTokenIds(test::NpyBytes("<i4", "(0, 3)", Ids{}), 512, "t.npy").empty());
  const std::string header = "{'descr': '<i4', 'fortran_order': False, 'shape': (2,), }";
  for (int major : {2, 3})
    CHECK(ParseNpyTokenIds(NpyWithHeader(header, Int32s({11, 12}), major), 512, "t.npy") ==
          Ids{11, 12});
  // Any dict literal Python reads: double quotes, another key order, no trailing comma, new lines.
  CHECK(ParseNpyTokenIds(NpyWithHeader("{\"shape\":(1,2,),\n \"descr\":\"<i4\",'fortran_order':"
                                       "False}",
                                       Int32s({13, 14})),
                         512, "t.npy") == Ids{13, 14});
}

TEST_CASE(".npy: a shape whose byte size overflows is refused before any read",
          "[token_ids][npy]") {
  // 4 x (2^62 + 2) wraps around to 8, the data's size; (2^32, 2^32) holds 2^64 elements.
  CHECK(NpyError(test::NpyBytes("<i4", "(4611686018427387906,)", Ids{1, 2})) ==
        "t.npy: .npy shape is too large (its size in bytes overflows 64 bits)");
  CHECK(NpyError(test::NpyBytes("<i4", "(4294967296, 4294967296)", Ids{1, 2})) ==
        "t.npy: .npy shape is too large (its size in bytes overflows 64 bits)");
  // Dimensions are read below 2^63 without wrapping: 9 x 10^19 would wrap to 8.6 x 10^18.
  for (const char* shape :
       {"(99999999999999999999,)", "(90000000000000000000,)", "(9223372036854775808,)"})
    CHECK(NpyError(test::NpyBytes("<i4", shape, Ids{1, 2})) ==
          "t.npy: .npy header: 'shape' has a dimension of 2^63 or more");
  CHECK(NpyError(test::NpyBytes("<i4", "(9223372036854775807,)", Ids{1, 2})) ==
        "t.npy: .npy shape is too large (its size in bytes overflows 64 bits)");
}

TEST_CASE(".npy: the header must be the dict NumPy writes", "[token_ids][npy]") {
  const std::string data = Int32s({1, 2});
  auto header = [&](const std::string& h) { return NpyError(NpyWithHeader(h, data)); };
  const std::string form = "t.npy: .npy header: 'shape' must be a tuple of non-negative integers";
  CHECK(header("{'descr': '<i4', 'fortran_order': False, 'shape': 4096 }").rfind(form, 0) == 0);
  CHECK(header("{'descr': '<i4', 'fortran_order': False, 'shape': (abc,) }").rfind(form, 0) == 0);
  CHECK(header("{'descr': '<i4', 'fortran_order': False, 'shape': [2] }").rfind(form, 0) == 0);
  CHECK(header("{'descr': '<i4', 'fortran_order': False, 'shape': (2.0,) }").rfind(form, 0) == 0);
  CHECK(header("{'descr': '<i4', 'fortran_order': False, 'shape': (2, 1").rfind(form, 0) == 0);
  CHECK(header("{'descr': '<i4', 'fortran_order': False, 'shape': (-1,-2) }") ==
        "t.npy: .npy header: 'shape' has a negative dimension");
  CHECK(header("{'descr': '<i4', 'fortran_order': False, 'shape': (2) }") ==
        "t.npy: .npy header: 'shape' (n) is a number, not a tuple: write (n,)");
  CHECK(header("{'descr': '<f4', 'descr': '<i4', 'fortran_order': False, 'shape': (2,) }") ==
        "t.npy: .npy header: 'descr' is given twice");
  CHECK(header("{'descr': '<i4', 'fortran_order': False, 'shape': (2,), 'x': 1}") ==
        "t.npy: .npy header: unknown key 'x' (a .npy header has 'descr', 'fortran_order', "
        "'shape')");
  CHECK(header("{'descr': '<i4', 'fortran_order': False}") == "t.npy: .npy header: has no 'shape'");
  CHECK(header("{'descr': '<i4', 'fortran_order': 0, 'shape': (2,)}") ==
        "t.npy: .npy header: 'fortran_order' must be True or False");
  CHECK(header("{'descr': '<i4', 'fortran_order': Falsey, 'shape': (2,)}") ==
        "t.npy: .npy header: 'fortran_order' must be True or False");
  CHECK(header("{'descr': '<i4, 'fortran_order': False, 'shape': (2,)}").rfind("t.npy: .npy", 0) ==
        0);
  CHECK(header("{'descr': '\\x3ci4', 'fortran_order': False, 'shape': (2,)}") ==
        "t.npy: .npy header: unterminated or escaped string at byte 10");
  CHECK(header("{'descr': '<i4', 'fortran_order': False, 'shape': (2,)} x") ==
        "t.npy: .npy header: text after the closing '}' at byte 56");
  CHECK(header("'descr': '<i4'") ==
        "t.npy: .npy header: expected '{' (the header is a Python dict) at byte 0");
  CHECK(header("") ==
        "t.npy: .npy header: expected '{' (the header is a Python dict) at the end of the header");
  CHECK(header("{'descr': '<i4', ") ==
        "t.npy: .npy header: expected a quoted string at the end of the header");
}

TEST_CASE(".npy: the file around the header", "[token_ids][npy]") {
  const std::string good = test::NpyBytes("<i4", "(2,)", Ids{1, 2});
  CHECK(NpyError("\x93NUMPY\x01") == "t.npy: not a NumPy .npy file (bad magic)");
  std::string v = good;
  v[6] = 4;
  CHECK(NpyError(v) == "t.npy: .npy format version 4.0 is not supported (1.0, 2.0 and 3.0 are)");
  v[6] = 1, v[7] = 1;
  CHECK(NpyError(v) == "t.npy: .npy format version 1.1 is not supported (1.0, 2.0 and 3.0 are)");
  CHECK(NpyError(good.substr(0, 40)) == "t.npy: .npy header runs past the end of the file");
  CHECK(NpyError(std::string("\x93NUMPY\x02\x00\xff\xff", 10)) ==
        "t.npy: .npy header runs past the end of the file");
  CHECK(NpyError(good + "x") ==
        "t.npy: .npy data holds 9 bytes, not a whole number of 4-byte "
        "elements");
  CHECK(NpyError(good + "abcd") == "t.npy: .npy data holds 3 elements, its shape says 2");
  CHECK(NpyError(test::NpyBytes("<i8", "(1,)", std::vector<std::int64_t>{std::int64_t{1} << 40})) ==
        "t.npy: element 0: token id 1099511627776 is outside the model's vocabulary of 512");
  CHECK(NpyError(test::NpyBytes("<f8", "(1,)", std::vector<double>{1})) ==
        "t.npy: .npy dtype '<f8' is not token ids (expected little-endian int32 or int64)");
  CHECK(NpyError(test::NpyBytes(std::string(100, 'x'), "(1,)", Ids{1})) ==
        "t.npy: .npy dtype '" + std::string(32, 'x') +
            "...' is not token ids (expected little-endian int32 or int64)");
}

TEST_CASE("JSON Lines: id lists and documents in file order", "[token_ids][jsonl]") {
  CHECK(Lines("{\"input_ids\": [1, 2]}\n\n[3]\r\n  \n{\"ids\": [4], \"text\": \"x\"}").ids ==
        Ids{1, 2, 3, 4});
  // input_ids before ids; a repeated key keeps its last value, other fields are ignored.
  CHECK(Lines("{\"ids\": [9], \"input_ids\": [5], \"meta\": {\"ids\": [600]}}").ids == Ids{5});
  CHECK(Lines("{\"ids\": [600], \"ids\": [6]}").ids == Ids{6});
  std::vector<std::string> docs;
  const JsonLinesIds d =
      Lines("{\"text\": \"a\", \"n\": [1.5]}\n{\"text\": 1, \"text\": \"b\"}\n", &docs);
  CHECK(d.documents);
  CHECK(d.ids.empty());
  CHECK(docs == std::vector<std::string>{"t.jsonl: line 1 a", "t.jsonl: line 2 b"});
}

TEST_CASE("JSON Lines: ids that are not ids are reported as written", "[token_ids][jsonl]") {
  CHECK(LinesError("[18446744073709551615]") ==
        "t.jsonl: line 1: token id 18446744073709551615 is outside the model's vocabulary of 512");
  CHECK(LinesError("[1]\n[99999999999999999999999]") ==
        "t.jsonl: line 2: token id 99999999999999999999999 is outside the model's vocabulary of "
        "512");
  CHECK(LinesError("[-3]") ==
        "t.jsonl: line 1: token id -3 is outside the model's vocabulary of "
        "512");
  CHECK(LinesError("[1e3]") == "t.jsonl: line 1: token id 1e3 is not an integer");
  CHECK(LinesError("{\"ids\": [1, 2.50]}") == "t.jsonl: line 1: token id 2.50 is not an integer");
  CHECK(LinesError("[\"5\"]") == "t.jsonl: line 1: token id \"5\" is not an integer");
  CHECK(LinesError("[[1]]") == "t.jsonl: line 1: token id [...] is not an integer");
  CHECK(LinesError("{\"input_ids\": [null]}") ==
        "t.jsonl: line 1: token id null is not an integer");
  CHECK(LinesError("[1, 2") == "t.jsonl: line 1: not valid JSON");
  CHECK(LinesError("[1] [2]") == "t.jsonl: line 1: not valid JSON");
  CHECK(LinesError("5") ==
        "t.jsonl: line 1: expected {\"text\": \"...\"}, {\"input_ids\": "
        "[...]}, {\"ids\": [...]} or a list of ids");
  CHECK(LinesError("{\"ids\": 5}") == LinesError("5"));
  CHECK(LinesError("[1]\n{\"text\": \"a\"}") ==
        "t.jsonl: line 2: mixes documents and token ids; use one form per file");
  CHECK(LinesError(" \n\r\n") == "t.jsonl: no lines with text or token ids");
}
