#include "formats/safetensors_header.h"

#include <catch2/catch.hpp>

#include "formats/error.h"
#include "tests/test_support.h"

using namespace kvfold;
using kvfold::test::SafetensorsBytes;

namespace {

SafetensorsHeader Parse(const std::string& bytes) {
  return ParseSafetensorsHeader(bytes, bytes.size(), "model.safetensors");
}

// Asserts that parsing fails with a message naming the file and containing `needle`.
void ExpectRejected(const std::string& bytes, const std::string& needle) {
  try {
    Parse(bytes);
    FAIL("accepted a malformed header; expected: " << needle);
  } catch (const Error& e) {
    const std::string msg = e.what();
    INFO(msg);
    CHECK(msg.rfind("model.safetensors: ", 0) == 0);
    CHECK(msg.find(needle) != std::string::npos);
    CHECK(msg.find('\n') == std::string::npos);
  }
}

const std::string kTwoTensors = R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
                                R"("b":{"dtype":"BF16","shape":[2,1],"data_offsets":[8,12]},)"
                                R"("__metadata__":{"format":"pt"}})";

}  // namespace

TEST_CASE("a valid header parses with every field", "[safetensors]") {
  const auto h = Parse(SafetensorsBytes(kTwoTensors, std::string(12, '\0')));
  REQUIRE(h.tensors.size() == 2);
  CHECK(h.tensors[0].name == "a");
  CHECK(h.tensors[0].dtype == DType::kF32);
  CHECK(h.tensors[1].shape == std::vector<std::int64_t>{2, 1});
  CHECK(h.tensors[1].begin == 8);
  CHECK(h.metadata.at("format") == "pt");
  CHECK(h.data_offset == 8 + kTwoTensors.size());
}

TEST_CASE("zero-sized and scalar tensors are valid", "[safetensors]") {
  const std::string json = R"({"e":{"dtype":"F32","shape":[0,4],"data_offsets":[0,0]},)"
                           R"("s":{"dtype":"F16","shape":[],"data_offsets":[0,2]}})";
  const auto h = Parse(SafetensorsBytes(json, std::string(2, '\0')));
  CHECK(h.tensors.size() == 2);
}

TEST_CASE("malformed headers are rejected with a one-line reason", "[safetensors]") {
  const std::string data(12, '\0');
  SECTION("file shorter than the length field") { ExpectRejected("abc", "too short"); }
  SECTION("truncated file: header length beyond the end") {
    std::string bytes = SafetensorsBytes(kTwoTensors, data);
    ExpectRejected(bytes.substr(0, 20), "exceeds the file size");
  }
  SECTION("truncated data area") {
    std::string bytes = SafetensorsBytes(kTwoTensors, data);
    ExpectRejected(bytes.substr(0, bytes.size() - 4), "past the end");
  }
  SECTION("offsets point past the end") {
    ExpectRejected(SafetensorsBytes(R"({"a":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}})",
                                    std::string(8, '\0')),
                   "past the end");
  }
  SECTION("overlapping tensors") {
    ExpectRejected(SafetensorsBytes(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
                                    R"("b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}})",
                                    data),
                   "overlap");
  }
  SECTION("shape does not match the bytes") {
    ExpectRejected(SafetensorsBytes(R"({"a":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}})",
                                    std::string(8, '\0')),
                   "shape needs 12 bytes");
  }
  SECTION("unknown dtype") {
    ExpectRejected(SafetensorsBytes(R"({"a":{"dtype":"F31","shape":[2],"data_offsets":[0,8]}})",
                                    std::string(8, '\0')),
                   "unknown dtype 'F31'");
  }
  SECTION("JSON that is not well formed") {
    ExpectRejected(SafetensorsBytes(R"({"a":{"dtype":"F32",)", ""), "not valid JSON");
  }
  SECTION("a JSON value that is not an object") {
    ExpectRejected(SafetensorsBytes("[1,2]", ""), "not a JSON object");
  }
  SECTION("the same tensor named twice") {
    ExpectRejected(SafetensorsBytes(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},)"
                                    R"("a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})",
                                    std::string(8, '\0')),
                   "twice");
  }
  SECTION("a hole between tensors") {
    ExpectRejected(SafetensorsBytes(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},)"
                                    R"("b":{"dtype":"F32","shape":[1],"data_offsets":[8,12]}})",
                                    data),
                   "belong to no tensor");
  }
  SECTION("trailing bytes nobody owns") {
    ExpectRejected(SafetensorsBytes(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}})",
                                    std::string(8, '\0')),
                   "trailing bytes");
  }
  SECTION("negative or fractional shape") {
    ExpectRejected(SafetensorsBytes(R"({"a":{"dtype":"F32","shape":[-1],"data_offsets":[0,4]}})",
                                    std::string(4, '\0')),
                   "non-negative integers");
  }
  SECTION("shape whose byte size overflows 64 bits") {
    ExpectRejected(
        SafetensorsBytes(
            R"({"a":{"dtype":"F32","shape":[4294967296,4294967296],"data_offsets":[0,4]}})",
            std::string(4, '\0')),
        "too large");
  }
  SECTION("end before begin") {
    ExpectRejected(SafetensorsBytes(R"({"a":{"dtype":"F32","shape":[0],"data_offsets":[4,0]}})",
                                    std::string(4, '\0')),
                   "end before");
  }
  SECTION("non-string metadata") {
    ExpectRejected(SafetensorsBytes(R"({"__metadata__":{"n":1}})", ""), "not a string");
  }
  SECTION("missing data_offsets") {
    ExpectRejected(SafetensorsBytes(R"({"a":{"dtype":"F32","shape":[1]}})", std::string(4, '\0')),
                   "data_offsets");
  }
}
