#include <sys/stat.h>

#include <algorithm>
#include <catch2/catch.hpp>
#include <cstring>
#include <limits>
#include <nlohmann/json.hpp>

#include "formats/dtype.h"
#include "formats/error.h"
#include "formats/safetensors_shards.h"
#include "formats/safetensors_writer.h"
#include "formats/tensor_store.h"
#include "tests/test_support.h"

using namespace kvfold;
using kvfold::test::ListDir;
using kvfold::test::ReadBytes;
using kvfold::test::SharedPath;
using kvfold::test::TempDir;

namespace {

std::string FloatBytes(const std::vector<float>& v) {
  return std::string(reinterpret_cast<const char*>(v.data()), v.size() * sizeof(float));
}

}  // namespace

TEST_CASE("written safetensors read back identically", "[safetensors][io]") {
  TempDir dir;
  const std::string a = FloatBytes({1, 2, 3, 4, 5, 6});
  const std::string b = FloatBytes({-1.5f});
  std::string c(4, '\0');  // two bf16 values
  const std::uint16_t c_vals[2] = {F32ToBf16(0.5f), F32ToBf16(-2.0f)};
  std::memcpy(c.data(), c_vals, 4);
  const std::string path = dir.File("t.safetensors");
  WriteSafetensors(path,
                   {{"z.weight", DType::kF32, {2, 3}, a},
                    {"b", DType::kF32, {}, b},
                    {"c", DType::kBF16, {2}, c}},
                   {{"format", "pt"}});

  TensorStore store = TensorStore::OpenFile(path);
  CHECK(store.Names() == std::vector<std::string>{"b", "c", "z.weight"});
  CHECK(store.ReadF32("z.weight") == std::vector<float>{1, 2, 3, 4, 5, 6});
  CHECK(store.ReadF32("c") == std::vector<float>{0.5f, -2.0f});
  CHECK(store.files()[0]->header().metadata.at("format") == "pt");
  CHECK(store.files()[0]->header().data_offset % 8 == 0);  // data area aligned

  // Deterministic: the same tensors in another order give the same bytes.
  const std::string path2 = dir.File("t2.safetensors");
  WriteSafetensors(path2,
                   {{"c", DType::kBF16, {2}, c},
                    {"z.weight", DType::kF32, {2, 3}, a},
                    {"b", DType::kF32, {}, b}},
                   {{"format", "pt"}});
  CHECK(ReadBytes(path) == ReadBytes(path2));
  // Only the two finished files exist: no temporary left behind.
  CHECK(ListDir(dir.path()) == std::vector<std::string>{"t.safetensors", "t2.safetensors"});
}

TEST_CASE("a weight that is not finite is named by its element, wherever it is",
          "[safetensors][io]") {
  // Past the first vector's width, and at the very end: the finiteness scan runs over blocks.
  TempDir dir;
  for (const float bad :
       {std::numeric_limits<float>::quiet_NaN(), -std::numeric_limits<float>::infinity()}) {
    for (const std::size_t at : {std::size_t{0}, std::size_t{37}, std::size_t{1022}}) {
      std::vector<float> v(1023, 0.25f);
      v[at] = bad;
      const std::string path = dir.File("bad.safetensors");
      WriteSafetensors(path, {{"w", DType::kF32, {31, 33}, FloatBytes(v)}});
      const TensorStore store = TensorStore::OpenFile(path);
      INFO("element " << at << ", value " << bad);
      CHECK_THROWS_WITH(store.ReadF32("w"), Catch::Contains("at element " + std::to_string(at)));
      CHECK_THROWS_WITH(store.ReadRowsF32("w", {static_cast<std::int64_t>(at / 33)},
                                          std::vector<float>(33).data()),
                        Catch::Contains("at element " + std::to_string(at)));
    }
  }
}

TEST_CASE("the writer refuses inconsistent tensors and leaves nothing behind",
          "[safetensors][io]") {
  TempDir dir;
  const std::string a = FloatBytes({1, 2, 3});
  CHECK_THROWS_WITH(WriteSafetensors(dir.File("x.safetensors"), {{"a", DType::kF32, {2, 2}, a}}),
                    Catch::Contains("its shape needs 16"));
  CHECK_THROWS_WITH(WriteSafetensors(dir.File("x.safetensors"),
                                     {{"a", DType::kF32, {3}, a}, {"a", DType::kF32, {3}, a}}),
                    Catch::Contains("given twice"));
  CHECK(ListDir(dir.path()).empty());
}

TEST_CASE("an unwritable output is a clear error", "[safetensors][io]") {
  TempDir dir;
  const std::string a = FloatBytes({1});
  const std::string path = dir.File("missing-folder/x.safetensors");
  CHECK_THROWS_WITH(WriteSafetensors(path, {{"a", DType::kF32, {1}, a}}),
                    Catch::StartsWith(path + ": cannot write"));
}

// The safetensors format's own rules (as the Rust reference reader checks them): an 8-byte
// little-endian header length, a JSON object possibly followed by spaces, and data offsets that
// tile the rest of the file from 0 without gaps. Returns the number of tensors.
static std::size_t CheckSafetensorsLayout(const std::string& path) {
  const std::string file = ReadBytes(path);
  REQUIRE(file.size() >= 8);
  std::uint64_t n = 0;
  for (int i = 7; i >= 0; --i) n = (n << 8) | static_cast<unsigned char>(file[i]);
  REQUIRE(8 + n <= file.size());
  CHECK(n % 8 == 0);  // the data area stays 8-byte aligned
  const std::string text = file.substr(8, n);
  const std::size_t json_end = text.find_last_not_of(' ') + 1;
  const auto header = nlohmann::json::parse(text.substr(0, json_end));
  std::vector<std::pair<std::uint64_t, std::uint64_t>> spans;
  for (const auto& [name, entry] : header.items()) {
    if (name != "__metadata__")
      spans.emplace_back(entry["data_offsets"][0], entry["data_offsets"][1]);
  }
  std::sort(spans.begin(), spans.end());
  std::uint64_t at = 0;
  for (const auto& [begin, end] : spans) {
    CHECK(begin == at);
    at = end;
  }
  CHECK(at == file.size() - 8 - n);
  return spans.size();
}

TEST_CASE("a model written tensor by tensor is sharded by size with an HF index",
          "[safetensors][io]") {
  TempDir dir;
  std::vector<std::string> blobs;
  for (int i = 0; i < 5; ++i) blobs.push_back(FloatBytes(std::vector<float>(100, float(i))));
  const std::uint64_t entry = ShardedSafetensorsWriter::EntryBound("t0", DType::kF32, {100});
  SECTION("data bytes close a shard: 2 tensors of 400 bytes fit in 900") {
    ShardedSafetensorsWriter writer(dir.path(), 900, 4096, {{"format", "pt"}});
    for (int i = 0; i < 5; ++i) writer.Add({"t" + std::to_string(i), DType::kF32, {100}, blobs[i]});
    CHECK(ListDir(dir.path()).size() == 3);  // temporary names only, until Finish
    const auto files = writer.Finish();
    CHECK(files == std::vector<std::string>{
                       "model-00001-of-00003.safetensors", "model-00002-of-00003.safetensors",
                       "model-00003-of-00003.safetensors", "model.safetensors.index.json"});
    CHECK(ListDir(dir.path()).size() == 4);
    CHECK(CheckSafetensorsLayout(dir.File(files[0])) == 2);
    CHECK(CheckSafetensorsLayout(dir.File(files[2])) == 1);
    TensorStore store = TensorStore::OpenModelDir(dir.path());
    CHECK(store.files().size() == 3);
    for (int i = 0; i < 5; ++i) CHECK(store.ReadF32("t" + std::to_string(i))[99] == float(i));
  }
  SECTION("header space closes a shard: room for two entries, no size limit") {
    const std::uint64_t metadata =
        nlohmann::json{{"__metadata__", {{"format", "pt"}}}}.dump().size() + 1;
    ShardedSafetensorsWriter writer(dir.path(), UINT64_MAX, metadata + 2 * entry,
                                    {{"format", "pt"}});
    for (int i = 0; i < 5; ++i) writer.Add({"t" + std::to_string(i), DType::kF32, {100}, blobs[i]});
    const auto files = writer.Finish();
    CHECK(files.size() == 4);  // 2 + 2 + 1 tensors and the index
    for (std::size_t f = 0; f < 3; ++f) CheckSafetensorsLayout(dir.File(files[f]));
    CHECK(TensorStore::OpenModelDir(dir.path()).ReadF32("t4")[0] == 4.0f);
  }
  SECTION("one shard is model.safetensors, its header padded with spaces; order is as added") {
    ShardedSafetensorsWriter writer(dir.path(), UINT64_MAX, 4096, {});
    writer.Add({"b", DType::kF32, {100}, blobs[1]});
    writer.Add({"a", DType::kF32, {100}, blobs[0]});
    CHECK(writer.Finish() == std::vector<std::string>{"model.safetensors"});
    CHECK(CheckSafetensorsLayout(dir.File("model.safetensors")) == 2);
    CHECK(ReadBytes(dir.File("model.safetensors")).size() == 8 + 4096 + 800);
    TensorStore store = TensorStore::OpenModelDir(dir.path());
    CHECK(store.Get("b").entry->begin == 0);
    CHECK(store.ReadF32("a")[0] == 0.0f);
  }
  SECTION("nothing is left behind without Finish; bad tensors are refused") {
    {
      ShardedSafetensorsWriter writer(dir.path(), 900, 4096, {});
      writer.Add({"t0", DType::kF32, {100}, blobs[0]});
      CHECK_THROWS_WITH(writer.Add({"t0", DType::kF32, {100}, blobs[0]}),
                        Catch::Contains("'t0' given twice"));
      CHECK_THROWS_WITH(writer.Add({"t1", DType::kF32, {99}, blobs[1]}),
                        Catch::Contains("its shape needs 396"));
    }
    CHECK(ListDir(dir.path()).empty());
  }
}

TEST_CASE("a sharded index that disagrees with its shards is rejected", "[safetensors][io]") {
  TempDir dir;
  const std::string a = FloatBytes({1});
  WriteSafetensors(dir.File("s1.safetensors"), {{"a", DType::kF32, {1}, a}});
  SECTION("index names a tensor the shard lacks") {
    test::WriteBytes(dir.File("model.safetensors.index.json"),
                     R"({"weight_map":{"a":"s1.safetensors","b":"s1.safetensors"}})");
    CHECK_THROWS_WITH(TensorStore::OpenModelDir(dir.path()), Catch::Contains("'b' is not in s1"));
  }
  SECTION("index points outside the folder") {
    test::WriteBytes(dir.File("model.safetensors.index.json"),
                     R"({"weight_map":{"a":"../s1.safetensors"}})");
    CHECK_THROWS_WITH(TensorStore::OpenModelDir(dir.path()),
                      Catch::Contains("not a file name in the model folder"));
  }
  SECTION("no weights at all") {
    CHECK_THROWS_WITH(TensorStore::OpenModelDir(dir.File("nothing")),
                      Catch::Contains("no model.safetensors"));
  }
}

TEST_CASE("the BF16 sharded checkpoint equals mini-mha rounded to BF16", "[safetensors][shared]") {
  TensorStore f32 = TensorStore::OpenModelDir(SharedPath("models/mini-mha"));
  TensorStore bf16 = TensorStore::OpenModelDir(SharedPath("models/mini-mha-bf16-sharded"));
  REQUIRE(bf16.files().size() == 2);
  REQUIRE(f32.Names() == bf16.Names());
  for (const std::string& name : {std::string("model.layers.0.self_attn.k_proj.weight"),
                                  std::string("model.embed_tokens.weight"),
                                  std::string("model.layers.5.mlp.down_proj.weight")}) {
    const auto a = f32.ReadF32(name);
    const auto b = bf16.ReadF32(name);
    REQUIRE(a.size() == b.size());
    std::size_t mismatches = 0;
    for (std::size_t i = 0; i < a.size(); ++i) mismatches += Bf16ToF32(F32ToBf16(a[i])) != b[i];
    CHECK(mismatches == 0);
  }
}
