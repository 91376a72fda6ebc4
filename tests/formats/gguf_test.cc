// GGUF (formats/gguf.h): what the writer writes, the reader reads back exactly (metadata of every
// type, tensor descriptions, aligned data), also when the header outgrows its reserve; and every
// malformed header is one Error naming the file, before any offset is used.
#include "formats/gguf.h"

#include <catch2/catch.hpp>
#include <cstring>

#include "formats/error.h"
#include "formats/mapped_file.h"
#include "tests/test_support.h"

using namespace kvfold;
using namespace kvfold::test;

namespace {

GgufMetadata SomeMetadata() {
  GgufMetadata m;
  m.Set("general.architecture", GgufValue::String("llama"));
  m.Set("llama.block_count", GgufValue::U32(2));
  m.Set("llama.rope.freq_base", GgufValue::F32(500000.0f));
  m.Set("tokenizer.ggml.add_bos_token", GgufValue::Bool(true));
  m.Set("tokenizer.ggml.tokens", GgufValue::Strings({"<s>", "a b", ""}));
  m.Set("tokenizer.ggml.token_type", GgufValue::Numbers(GgufValueType::kI32, {3, 1, -7}));
  m.Set("deci.attention.head_count_kv", GgufValue::Numbers(GgufValueType::kI32, {2, 4}));
  return m;
}

// Writes tensors "a" (F32 [3]) and "b" (F16 [2, 32]) with `reserve` bytes of header space.
std::string WriteSmall(const std::string& path, std::uint64_t reserve) {
  GgufWriter w(path, reserve);
  const float a[3] = {1.5f, -2.0f, 3.25f};
  w.AddTensor("a", GgmlType::kF32, {3});
  w.Write({reinterpret_cast<const char*>(a), sizeof a});
  w.AddTensor("b", GgmlType::kF16, {32, 2});
  const std::string b(128, '\x11');
  w.Write(b.substr(0, 50));  // in pieces
  w.Write(b.substr(50));
  w.Finish(SomeMetadata());
  return ReadBytes(path);
}

void CheckSmall(const std::string& bytes) {
  const GgufHeader h = ParseGgufHeader(bytes, "small.gguf");
  CHECK(h.version == 3);
  CHECK(h.data_offset % 32 == 0);
  CHECK(h.metadata.String("general.architecture") == "llama");
  CHECK(h.metadata.Number("llama.block_count") == 2.0);
  CHECK(h.metadata.Number("llama.rope.freq_base") == 500000.0);
  CHECK(h.metadata.Number("tokenizer.ggml.add_bos_token") == 1.0);
  CHECK(h.metadata.Find("tokenizer.ggml.tokens")->strings ==
        std::vector<std::string>{"<s>", "a b", ""});
  CHECK(h.metadata.Find("tokenizer.ggml.token_type")->numbers == std::vector<double>{3, 1, -7});
  REQUIRE(h.tensors.size() == 2);
  CHECK(h.tensors[0].name == "a");
  CHECK(h.tensors[0].offset == 0);
  CHECK(h.tensors[1].dims == std::vector<std::uint64_t>{32, 2});
  CHECK(h.tensors[1].offset == 32);  // 12 bytes of "a", padded to the alignment
  CHECK(h.tensors[1].bytes == 128);
  float a[3];
  std::memcpy(a, bytes.data() + h.data_offset, sizeof a);
  CHECK(a[2] == 3.25f);
  CHECK(bytes.substr(h.data_offset + 32) == std::string(128, '\x11'));
}

// A valid file's bytes with `edit` applied to a copy.
std::string Edited(std::string bytes, std::size_t at, const std::string& replacement) {
  return bytes.replace(at, replacement.size(), replacement);
}

std::string U64(std::uint64_t v) { return std::string(reinterpret_cast<const char*>(&v), 8); }
std::string U32(std::uint32_t v) { return std::string(reinterpret_cast<const char*>(&v), 4); }
std::string Str(const std::string& s) { return U64(s.size()) + s; }

}  // namespace

TEST_CASE("a GGUF file reads back as written, with or without moving its data", "[gguf]") {
  TempDir tmp;
  const std::string roomy = WriteSmall(tmp.File("roomy.gguf"), 4096);
  CheckSmall(roomy);
  CHECK(ParseGgufHeader(roomy, "x").data_offset == 4096);  // the padding key fills the reserve
  const std::string tight = WriteSmall(tmp.File("tight.gguf"), 64);  // header > reserve: moved
  CheckSmall(tight);
  CHECK(tight.size() < roomy.size());
  CHECK(ListDir(tmp.path()) == std::vector<std::string>{"roomy.gguf", "tight.gguf"});
}

TEST_CASE("an unfinished GGUF writer leaves no file", "[gguf]") {
  TempDir tmp;
  {
    GgufWriter w(tmp.File("x.gguf"), 256);
    w.AddTensor("a", GgmlType::kF32, {4});
    w.Write(std::string(8, '\0'));
    CHECK_THROWS_WITH(w.AddTensor("b", GgmlType::kF32, {4}), Catch::Contains("8 bytes short"));
  }
  CHECK(ListDir(tmp.path()).empty());
  GgufWriter w(tmp.File("y.gguf"), 256);
  CHECK_THROWS_WITH(w.AddTensor(std::string(64, 'n'), GgmlType::kF32, {4}),
                    Catch::Contains("63 bytes"));
  CHECK_THROWS_WITH(w.AddTensor("q", GgmlType::kQ8_0, {31}), Catch::Contains("blocks of 32"));
}

TEST_CASE("malformed GGUF headers are refused by name", "[gguf][hostile]") {
  TempDir tmp;
  const std::string good = WriteSmall(tmp.File("g.gguf"), 64);
  const GgufHeader h = ParseGgufHeader(good, "g.gguf");
  const std::string head = "GGUF" + U32(3);
  auto refused = [](const std::string& bytes, const char* why) {
    CHECK_THROWS_WITH(ParseGgufHeader(bytes, "bad.gguf"),
                      Catch::StartsWith("bad.gguf: ") && Catch::Contains(why));
  };
  refused("GGML" + good.substr(4), "no 'GGUF' magic");
  refused("GGUF" + U32(1) + U64(0) + U64(0), "version 1");
  refused(good.substr(0, 40), "cannot fit");  // 8 key/values in 16 bytes
  refused(good.substr(0, 200), "truncated");
  refused(head + U64(0) + U64(UINT64_MAX), "cannot fit");
  refused(head + U64(UINT64_MAX / 2) + U64(0), "cannot fit");
  // One key/value: a string claiming more bytes than the file has.
  refused(head + U64(0) + U64(1) + Str("k") + U32(8) + U64(1ull << 60), "truncated");
  // An array of 2^61 u64s, of arrays, of an unknown type.
  refused(head + U64(0) + U64(1) + Str("k") + U32(9) + U32(10) + U64(1ull << 61), "cannot fit");
  refused(head + U64(0) + U64(1) + Str("k") + U32(9) + U32(9) + U64(1), "nested");
  refused(head + U64(0) + U64(1) + Str("k") + U32(13) + U32(0), "unknown type");
  refused(head + U64(0) + U64(2) + Str("k") + U32(4) + U32(1) + Str("k") + U32(4) + U32(1),
          "twice");
  refused(head + U64(0) + U64(1) + Str("general.alignment") + U32(4) + U32(48), "power of two");
  refused(head + U64(0) + U64(1) + Str("b") + U32(7) + std::string(1, '\2'), "a bool is 2");
  auto one_tensor = [&](const std::string& info) {
    std::string bytes = head + U64(1) + U64(0) + info;
    bytes.resize((bytes.size() + 31) / 32 * 32 + 64, '\0');
    return bytes;
  };
  refused(one_tensor(Str(std::string(64, 'n')) + U32(1) + U64(4) + U32(0) + U64(0)), "1 to 63");
  refused(
      one_tensor(Str("t") + U32(5) + U64(1) + U64(1) + U64(1) + U64(1) + U64(1) + U32(0) + U64(0)),
      "5 dimensions");
  refused(one_tensor(Str("t") + U32(1) + U64(0) + U32(0) + U64(0)), "dimension 0");
  refused(one_tensor(Str("t") + U32(1) + U64(4) + U32(99) + U64(0)), "unknown ggml type 99");
  refused(one_tensor(Str("t") + U32(1) + U64(4) + U32(0) + U64(8)), "not aligned");
  refused(one_tensor(Str("t") + U32(1) + U64(1024) + U32(0) + U64(0)), "past the end");
  refused(one_tensor(Str("t") + U32(2) + U64(1ull << 40) + U64(1ull << 40) + U32(0) + U64(0)),
          "overflows");
  // Two tensors over the same bytes.
  std::string two = head + U64(2) + U64(0) + Str("a") + U32(1) + U64(8) + U32(0) + U64(0) +
                    Str("b") + U32(1) + U64(8) + U32(0) + U64(0);
  two.resize((two.size() + 31) / 32 * 32 + 64, '\0');
  refused(two, "overlap");
  // The valid file's first tensor renamed to the second's name.
  const std::size_t at = good.find(Str("a") + U32(1));
  REQUIRE(at != std::string::npos);
  refused(Edited(good, at, Str("b")), "twice");
  CHECK(h.tensors.size() == 2);
}
