// GGUF export (converter/export): the exported tensors are the HF tensors, in llama.cpp's names,
// with Q/K rows in its RoPE pair order (the inverse map is written here independently), in the
// dtype asked for; inspect reads the file back; what llama.cpp cannot run and files kvfold did
// not write are refused by name. (CTest llama_cpp has llama.cpp itself run the exported models.)
#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>

#include "converter/export/gguf_model.h"
#include "formats/checkpoint.h"
#include "formats/dtype.h"
#include "formats/gguf.h"
#include "formats/mapped_file.h"
#include "tests/test_support.h"

using namespace kvfold;
using namespace kvfold::test;

namespace {

const GgufTensorInfo& Find(const GgufHeader& h, const std::string& name) {
  for (const auto& t : h.tensors) {
    if (t.name == name) return t;
  }
  FAIL("no tensor " << name);
  throw;
}

// GGUF row r of a head of d rows holds HF row (r % 2) * d / 2 + r / 2 of that head.
std::int64_t HfRowOf(std::int64_t row, std::int64_t d) {
  const std::int64_t head = row / d, r = row % d;
  return head * d + (r % 2) * (d / 2) + r / 2;
}

// Every tensor of `model` against the GGUF file `path` written with weights of `type`.
void CheckTensors(const std::string& model, const std::string& path, DType type) {
  const Checkpoint ck = OpenCheckpoint(model);
  const MappedFile file(path);
  const GgufHeader h = ParseGgufHeader(file.bytes(), path);
  std::size_t checked = 0;
  for (const auto& [name, ref] : ck.tensors.tensors()) {
    const TensorId id = *ParseHfTensorName(name);
    const GgufTensorInfo& t = Find(h, GgufTensorName(id, name));
    const auto& shape = ref.entry->shape;
    CHECK(t.dims == std::vector<std::uint64_t>(shape.rbegin(), shape.rend()));
    const DType stored = shape.size() == 1 ? DType::kF32 : type;  // norms stay F32
    REQUIRE(t.type == (stored == DType::kF32   ? GgmlType::kF32
                       : stored == DType::kF16 ? GgmlType::kF16
                                               : GgmlType::kBF16));
    const std::vector<float> hf = ck.tensors.ReadF32(name);
    std::vector<float> gguf(hf.size());
    ConvertToF32(stored, file.data() + h.data_offset + t.offset, gguf.size(), gguf.data());
    const bool permuted = id.role == TensorRole::kQProj || id.role == TensorRole::kKProj;
    const std::int64_t cols = shape.size() == 2 ? shape[1] : 1, d = ck.config.head_dim;
    for (std::size_t i = 0; i < gguf.size(); ++i) {
      const std::int64_t row = static_cast<std::int64_t>(i) / cols,
                         col = static_cast<std::int64_t>(i) % cols;
      const float want =
          hf[static_cast<std::size_t>((permuted ? HfRowOf(row, d) : row) * cols + col)];
      float rounded = want;  // the value `stored` holds for it
      ConvertFromF32(stored, &want, 1, &rounded);
      ConvertToF32(stored, &rounded, 1, &rounded);
      if (gguf[i] != rounded)
        FAIL(name << " element " << i << ": " << gguf[i] << " != " << rounded);
    }
    ++checked;
  }
  CHECK(checked == h.tensors.size());  // nothing more in the file (no rope_freqs here)
}

}  // namespace

TEST_CASE("kvfold export writes the HF tensors in llama.cpp's layout", "[gguf][shared]") {
  TempDir tmp;
  const std::string stories = SharedPath("models/stories260K");
  const auto r = RunKvfold("export " + stories + " -o " + tmp.File("s.gguf") + " --dtype f16");
  REQUIRE(r.exit_code == 0);
  CHECK(r.err.find("nmt_nfkc") != std::string::npos);  // the tokenizer note
  CheckTensors(stories, tmp.File("s.gguf"), DType::kF16);
  const std::string bf16 = SharedPath("models/mini-mha-bf16-sharded");
  REQUIRE(RunKvfold("export " + bf16 + " -o " + tmp.File("b.gguf") + " --quiet").exit_code == 0);
  CheckTensors(bf16, tmp.File("b.gguf"), DType::kBF16);  // the checkpoint's own dtype

  const MappedFile file(tmp.File("s.gguf"));
  const GgufHeader h = ParseGgufHeader(file.bytes(), "s.gguf");
  const GgufMetadata& m = h.metadata;
  CHECK(m.String("general.architecture") == "llama");
  CHECK(m.Number("general.file_type") == 1.0);
  CHECK(m.Number("llama.attention.head_count_kv") == 4.0);
  CHECK(m.Number("llama.rope.dimension_count") == 8.0);
  CHECK(m.String("tokenizer.ggml.model") == "llama");
  CHECK(m.Find("tokenizer.ggml.tokens")->size() == 512);
  CHECK(m.Find("tokenizer.ggml.tokens")->strings[1] == "<s>");
  CHECK(m.Find("tokenizer.ggml.token_type")->numbers[1] == 3.0);  // control
  CHECK(m.Number("tokenizer.ggml.bos_token_id") == 1.0);
  CHECK(m.Number("tokenizer.ggml.add_bos_token") == 1.0);
  CHECK(!m.Find("kvfold.json"));  // a source checkpoint records no conversion
  CHECK(m.String("kvfold.version"));

  const auto inspect = RunKvfold("inspect " + tmp.File("s.gguf") + " --json");
  REQUIRE(inspect.exit_code == 0);
  const auto j = nlohmann::json::parse(inspect.out);
  CHECK(j["num_key_value_heads"] == nlohmann::json::array({4, 4, 4, 4, 4}));
  CHECK(j["kv_cache_bytes_per_token_f16"] == 2 * 5 * 4 * 8 * 2);
  CHECK(j["made_by_kvfold"] != "");
}

TEST_CASE("GGUF outputs replace only what kvfold wrote, and refuse what llama.cpp cannot run",
          "[gguf][shared][hostile]") {
  TempDir tmp;
  const std::string stories = SharedPath("models/stories260K");
  const std::string out = tmp.File("s.gguf");
  REQUIRE(RunKvfold("export " + stories + " -o " + out + " --quiet").exit_code == 0);
  auto r = RunKvfold("export " + stories + " -o " + out + " --quiet");
  CHECK(r.exit_code == 1);
  CHECK(r.err.find("exists (--force replaces a GGUF file kvfold wrote)") != std::string::npos);
  CHECK(RunKvfold("export " + stories + " -o " + out + " --quiet --force").exit_code == 0);
  // A GGUF file someone else wrote, and a file that is no GGUF: never replaced.
  const std::string foreign =
      std::string("GGUF") + std::string("\3\0\0\0", 4) + std::string(16, '\0');
  for (const std::string& bytes : {foreign, std::string("my notes\n")}) {
    WriteBytes(tmp.File("theirs.gguf"), bytes);
    r = RunKvfold("export " + stories + " -o " + tmp.File("theirs.gguf") + " --quiet --force");
    CHECK(r.exit_code == 1);
    CHECK(r.err.find("is not a GGUF file kvfold wrote") != std::string::npos);
    CHECK(ReadBytes(tmp.File("theirs.gguf")) == bytes);
  }
  // Passes whose output llama.cpp cannot run: refused before any work, nothing written.
  const std::string calib = SharedPath("text/tinystories/calib.txt");
  for (const char* passes :
       {"mlkv<kv-layers=2>", "kv-scales", "gqa-svd<kv-heads=2,rope=reconstruct>",
        "kv-norm-analysis", "kv-mixed"}) {
    r = RunKvfold("convert " + stories + "-mha --calib " + calib + " --passes '" + passes +
                  "' --format gguf -o " + tmp.File("x.gguf") + " --quiet");
    CHECK(r.exit_code == 1);
    CHECK(r.err.find("llama.cpp") != std::string::npos);
  }
  CHECK(ListDir(tmp.path()) == std::vector<std::string>{"s.gguf", "theirs.gguf"});
}

TEST_CASE("convert --format gguf carries kvfold.json into the file", "[gguf][shared]") {
  TempDir tmp;
  const std::string mha = SharedPath("models/stories260K-mha");
  const auto r =
      RunKvfold("convert " + mha + " --calib " + SharedPath("text/tinystories/calib.txt") +
                " --calib-tokens 2048 --passes 'gqa-svd<kv-heads=4>' --format gguf -o " +
                tmp.File("g.gguf") + " --quiet");
  REQUIRE(r.exit_code == 0);
  const auto inspect = RunKvfold("inspect " + tmp.File("g.gguf"));
  REQUIRE(inspect.exit_code == 0);
  CHECK(inspect.out.find("KV heads       4 every layer") != std::string::npos);
  CHECK(inspect.out.find("pipeline       gqa-svd<kv-heads=4,") != std::string::npos);
  CHECK(ListDir(tmp.path()) == std::vector<std::string>{"g.gguf"});
}

// What llama.cpp's gemma2 / gemma3 fix in code (llama-model.cpp) and the file cannot say: a model
// that differs is refused by name rather than written to run wrong.
TEST_CASE("GGUF gemma2/gemma3: the layouts llama.cpp fixes are checked, norms shifted by 1",
          "[gguf][gemma]") {
  auto config = [](const std::string& extra) {
    return ParseModelConfig(
        R"({"model_type":"gemma3_text","hidden_size":64,"num_hidden_layers":7,
            "num_attention_heads":4,"num_key_value_heads":2,"head_dim":16,
            "query_pre_attn_scalar":16,"sliding_window":32,"intermediate_size":96,
            "vocab_size":512)" +
            extra + "}",
        "config.json");
  };
  CHECK(GgufArchitecture(config(""), "m") == "gemma3");
  CHECK_THROWS_WITH(GgufArchitecture(config(R"(,"sliding_window_pattern":2)"), "m"),
                    Catch::Contains("every 6th layer global") && Catch::Contains("layer 1"));
  CHECK_THROWS_WITH(GgufArchitecture(config(R"(,"query_pre_attn_scalar":24)"), "m"),
                    Catch::Contains("head_dim^-1/2"));
  CHECK_THROWS_WITH(GgufArchitecture(config(R"(,"rope_local_base_freq":20000)"), "m"),
                    Catch::Contains("RoPE base 10000"));
  ModelConfig gemma2 = config(R"(,"sliding_window_pattern":2)");
  gemma2.model_type = "gemma2";
  gemma2.qk_norm = false;
  CHECK(GgufArchitecture(gemma2, "m") == "gemma2");
  CHECK(GgufTensorName({TensorRole::kMlpNorm, 3}, "m", "gemma2") ==
        "blk.3.post_attention_norm.weight");
  CHECK(GgufTensorName({TensorRole::kPreFeedforwardNorm, 3}, "m", "gemma3") ==
        "blk.3.ffn_norm.weight");
  CHECK(GgufTensorName({TensorRole::kPostFeedforwardNorm, 3}, "m", "gemma3") ==
        "blk.3.post_ffw_norm.weight");
  CHECK(GgufTensorName({TensorRole::kMlpNorm, 3}, "m", "llama") == "blk.3.ffn_norm.weight");
  CHECK(NormWeightShift("gemma3") == 1.0f);
  CHECK(NormWeightShift("qwen3") == 0.0f);
}
