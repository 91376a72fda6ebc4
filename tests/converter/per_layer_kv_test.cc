// Per-layer KV heads (gqa-svd/gqa-meanpool kv-heads=a,b,... and kv-heads=auto): exact where the
// math is, written as DeciLM (hf) or deci (GGUF), read back by every kvfold runtime path.
#include <catch2/catch.hpp>
#include <cmath>
#include <filesystem>
#include <nlohmann/json.hpp>

#include "formats/checkpoint.h"
#include "formats/gguf.h"
#include "formats/mapped_file.h"
#include "runtime_check/reference_model.h"
#include "tests/converter/convert_test_support.h"
#include "tests/runtime_check/runtime_test_support.h"
#include "tests/test_support.h"

using namespace kvfold;
using namespace kvfold::test;

namespace {

// Max |logit - the float64 numpy reference| over its every position and vocabulary entry.
double ReferenceDiff(const std::string& model_dir, const std::string& reference) {
  const auto ref = nlohmann::json::parse(ReadFileToString(SharedPath("reference/" + reference)));
  const auto ids = ref["input_ids"].get<std::vector<std::int32_t>>();
  const auto expected = ref["logits"].get<std::vector<std::vector<double>>>();
  const Checkpoint ck = OpenCheckpoint(model_dir);
  const std::vector<float> logits = ReferenceModel::Load(ck, {"cpu", 2})->Logits(ids);
  const auto V = static_cast<std::size_t>(ck.config.vocab_size);
  double worst = 0;
  for (std::size_t t = 0; t < ids.size(); ++t) {
    for (std::size_t v = 0; v < V; ++v)
      worst = std::max(worst, std::abs(logits[t * V + v] - expected[t][v]));
  }
  return worst;
}

}  // namespace

TEST_CASE("per-layer KV heads fold duplicated heads back exactly and read back as DeciLM",
          "[convert][per-layer][exact][shared]") {
  // stories260K-mha duplicates each of stories260K's 4 KV heads: any layer may keep 8 or go to 4
  // exactly, so every mix reproduces the float64 reference of stories260K.
  TempDir tmp;
  for (const char* pass : {"gqa-svd", "gqa-meanpool"}) {
    INFO(pass);
    const std::string out = tmp.File(pass);
    RunConvert("stories260K-mha", std::string(pass) + "<kv-heads=4,8,4,8,4>", out);
    CHECK(ReferenceDiff(out, "stories260K_logits.json") < 1e-4);
    const Checkpoint ck = OpenCheckpoint(out);
    CHECK(ck.config.layer_kv_heads == std::vector<std::int64_t>{4, 8, 4, 8, 4});
    CHECK(ck.config.architecture == "DeciLMForCausalLM");
    CHECK(ck.tensors.Find("model.layers.1.self_attn.k_proj.weight")->entry->shape.front() == 64);
    CHECK(ck.tensors.Find("model.layers.2.self_attn.k_proj.weight")->entry->shape.front() == 32);
    CHECK(ck.config.KvBytesPerToken(4) == 2 * (4 + 8 + 4 + 8 + 4) * 8 * 4);
    CHECK(std::filesystem::exists(out + "/configuration_decilm.py"));
  }
  // The batched forward (fused kernels and ATen) and token-by-token decoding agree on it.
  const Checkpoint ck = OpenCheckpoint(tmp.File("gqa-svd"));
  const auto ids = SomeTokens(48, static_cast<int>(ck.config.vocab_size));
  RuntimeOptions sequential;
  sequential.threads = 2;
  sequential.token_by_token = true;
  const auto decoded = ReferenceModel::Load(ck, sequential)->Logits(ids);
  CHECK(MaxAbsDiff(decoded, LoadModel(ck, true)->Logits(ids)) < 1e-4);
  CHECK(MaxAbsDiff(decoded, LoadModel(ck, false)->Logits(ids)) < 1e-4);
  // A second pass on the DeciLM output: one count again, a plain Llama.
  RunConvert("stories260K-mha", "gqa-svd<kv-heads=4>", tmp.File("uniform"));
  ConvertJob o;
  o.input.model = tmp.File("gqa-svd");
  o.input.calib_text = CalibFor("stories260K");
  o.passes = ParsePipeline("gqa-svd<kv-heads=4,4,4,4,4>");
  o.output.path = tmp.File("again");
  o.input.calib_tokens = 2048;
  o.compute.progress = false;
  Convert(o);
  const Checkpoint again = OpenCheckpoint(o.output.path);
  CHECK_FALSE(again.config.PerLayerKvHeads());
  CHECK(again.config.architecture == "LlamaForCausalLM");
  CHECK(ReferenceDiff(o.output.path, "stories260K_logits.json") < 1e-4);
}

TEST_CASE("kv-heads=auto allocates within the total and is exact at the full total",
          "[convert][per-layer][shared]") {
  TempDir tmp;
  RunConvert("mini-mha", "gqa-svd<kv-heads=auto,kv-head-total=48>", tmp.File("all"));
  CHECK(MaxLogitDiff(SharedPath("models/mini-mha"), tmp.File("all")) < 1e-4);
  RunConvert("mini-mha", "gqa-svd<kv-heads=auto,kv-head-total=20>", tmp.File("auto"));
  const Checkpoint ck = OpenCheckpoint(tmp.File("auto"));
  std::int64_t total = 0;
  for (std::int64_t l = 0; l < ck.config.num_hidden_layers; ++l) {
    CHECK(8 % ck.config.KvHeads(l) == 0);
    total += ck.config.KvHeads(l);
  }
  CHECK(total <= 20);
  const auto meta = ReadJson(tmp.File("auto") + "/kvfold.json");
  const auto& record = meta["passes"][0];
  CHECK(record["allocation"]["kv_head_total"] == 20);
  CHECK(record["allocation"]["layers"].size() == 6);
  CHECK(record["kv_heads_after"].size() == 6);
}

TEST_CASE("per-layer KV heads: what cannot hold them is refused before any work",
          "[convert][per-layer][shared]") {
  TempDir tmp;
  RunConvert("stories260K-mha", "gqa-svd<kv-heads=4,8,4,8,4>", tmp.File("pl"));
  auto refused = [&](const std::string& args, const std::string& needle) {
    const auto r = RunKvfold("convert " + args + " --quiet");
    INFO(args << "\n" << r.err);
    CHECK(r.exit_code != 0);
    CHECK(r.err.find(needle) != std::string::npos);
  };
  const std::string calib = " --calib " + CalibFor("stories260K") + " --calib-tokens 1024";
  refused(tmp.File("pl") + calib + " --passes kv-mixed -o " + tmp.File("x"),
          "kv-mixed: its table holds one KV-head count for every layer");
  refused(tmp.File("pl") + calib + " --passes 'mlkv<kv-layers=2>' -o " + tmp.File("x"),
          "mlkv: layers that share K/V need one KV-head count");
  refused(tmp.File("pl") + calib + " --passes 'gqa-svd<kv-heads=8>' -o " + tmp.File("x"),
          "does not divide layer 0's 4 KV heads");
  refused(SharedPath("models/mini-mha") + calib + " --passes 'gqa-svd<kv-heads=4,4>' -o " +
              tmp.File("x"),
          "kv-heads lists 2 counts for 6 layers");
  refused(SharedPath("models/mini-mha") + calib + " --passes 'gqa-svd<kv-heads=auto>' -o " +
              tmp.File("x"),
          "kv-head-total is required");
  refused(SharedPath("models/mini-mha") + calib +
              " --passes 'gqa-svd<kv-heads=4,kv-head-total=8>' -o " + tmp.File("x"),
          "kv-head-total applies only with kv-heads=auto");
  refused(SharedPath("models/mini-mha") + calib +
              " --passes 'gqa-svd<kv-heads=8,4,4,4,4,2,rope=reconstruct>' -o " + tmp.File("x"),
          "rope=reconstruct needs one kv-heads count");
  CHECK_FALSE(std::filesystem::exists(tmp.File("x")));
  // The eviction policy's tables have one count for every layer; the l2 policy needs none.
  const auto e =
      RunKvfold("eval " + tmp.File("pl") + " --text " + SharedPath("text/tinystories/eval.txt") +
                " --max-windows 2 --quiet --kv-cache 'evict<policy=table>'");
  CHECK(e.exit_code != 0);
  CHECK(e.err.find("layers have different counts") != std::string::npos);
}

TEST_CASE("per-layer KV heads go to GGUF as llama.cpp's deci", "[gguf][per-layer][shared]") {
  TempDir tmp;
  const auto r = RunKvfold(
      "convert " + SharedPath("models/stories260K-mha") + " --calib " + CalibFor("stories260K") +
      " --calib-tokens 2048 --passes 'gqa-svd<kv-heads=4,8,4,8,2>' --format gguf -o " +
      tmp.File("d.gguf") + " --quiet");
  REQUIRE(r.exit_code == 0);
  const MappedFile file(tmp.File("d.gguf"));
  const GgufHeader h = ParseGgufHeader(file.bytes(), tmp.File("d.gguf"));
  CHECK(h.metadata.String("general.architecture") == "deci");
  const GgufValue* kv = h.metadata.Find("deci.attention.head_count_kv");
  REQUIRE(kv != nullptr);
  CHECK(kv->element == GgufValueType::kI32);
  CHECK(kv->numbers == std::vector<double>{4, 8, 4, 8, 2});
  const auto inspect = RunKvfold("inspect " + tmp.File("d.gguf"));
  CHECK(inspect.out.find("KV heads       [4,8,4,8,2]") != std::string::npos);
}
