#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>

#include "calib/text.h"
#include "calib/tokenizer.h"
#include "calib/windows.h"
#include "converter/model_summary.h"
#include "converter/passes/cross_layer_passes.h"
#include "formats/checkpoint.h"
#include "formats/error.h"
#include "formats/tensor_names.h"
#include "runtime_check/evaluate.h"
#include "runtime_check/reference_model.h"
#include "tests/converter/convert_test_support.h"
#include "tests/runtime_check/runtime_test_support.h"
#include "tests/test_support.h"

using namespace kvfold;
using kvfold::test::MaxLogitDiff;
using kvfold::test::ReadJson;
using kvfold::test::RunConvert;
using kvfold::test::SharedPath;
using kvfold::test::TempDir;

namespace {

std::vector<std::int64_t> Layout(const std::string& layer_types, std::int64_t layers) {
  return ParseLayerTypes(layer_types, layers, "test");
}

// KL(original || converted) over the first windows of held-out text.
double HeldOutKl(const std::string& model, const std::string& converted, int windows = 8) {
  const Checkpoint a = OpenCheckpoint(SharedPath("models/" + model)), b = OpenCheckpoint(converted);
  const auto tokenizer = Tokenizer::Load(a.tokenizer_path);
  const std::string text =
      SharedPath(model.rfind("stories", 0) == 0 ? "text/tinystories/eval.txt"
                                                : "text/wikitext-2/test.raw.txt");
  const auto w = CutWindows(tokenizer->Encode(LoadText(text)), 128, windows, text);
  EvalOptions o;
  o.progress = false;
  return CompareModels(*ReferenceModel::Load(a, {"cpu", 2}), *ReferenceModel::Load(b, {"cpu", 2}),
                       w, tokenizer->bos_id(), o)
      .kl;
}

}  // namespace

TEST_CASE("layouts match the reference repositories", "[cross-layer]") {
  // pythia-mlkv's convert_to_mlkv.py: [0] + [int((i + 1) * L / N)].
  CHECK(MlkvLayout(6, 3) == Layout("0_0_2_2_4_4", 6));
  CHECK(MlkvLayout(6, 4) == Layout("0_1_1_3_4_4", 6));
  CHECK(MlkvLayout(5, 3) == Layout("0_1_1_3_3", 5));
  CHECK(MlkvLayout(6, 1) == Layout("0_0_0_0_0_0", 6));
  // whyNLP/LCKV: configs/llama_tiny_lckv.json and the README's 22-layer example (w = 2).
  CHECK(LckvLayout(8, 2) == Layout("0_6_6_6_6_6_6_7", 8));
  CHECK(LayerTypesText(LckvLayout(22, 2)) ==
        "0_20_20_20_20_20_20_20_20_20_20_20_20_20_20_20_20_20_20_20_20_21");
  CHECK(LckvLayout(6, 0) == Layout("5_5_5_5_5_5", 6));
  CHECK(LckvLayout(6, 3) == Layout("0_1_4_4_4_5", 6));
}

TEST_CASE("sharing that keeps every layer's K/V reproduces the original logits",
          "[cross-layer][exact][shared]") {
  for (const char* model : {"stories260K", "mini-mha"}) {
    const Checkpoint ck = OpenCheckpoint(SharedPath(std::string("models/") + model));
    const std::string L = std::to_string(ck.config.num_hidden_layers);
    const std::string below = std::to_string(ck.config.num_hidden_layers - 1);
    // init=calib runs the whole fit and fold (each layer predicts itself); the others are no-ops.
    for (const std::string& passes :
         {"mlkv<kv-layers=" + L + ",init=calib>", "mlkv<kv-layers=" + L + ",init=mean>",
          "lckv<warmup=" + below + ",init=calib>", "lckv<warmup=" + L + ",init=mean>"}) {
      INFO(model << " " << passes);
      TempDir tmp;
      RunConvert(model, passes, tmp.File("out"));
      CHECK(MaxLogitDiff(SharedPath(std::string("models/") + model), tmp.File("out")) < 1e-4);
      CHECK_FALSE(OpenCheckpoint(tmp.File("out")).config.SharesKv());  // a vanilla llama again
    }
  }
}

TEST_CASE("an mlkv output records the sharing and drops the k/v projections of readers",
          "[cross-layer][output][shared]") {
  TempDir tmp;
  RunConvert("mini-mha", "mlkv<kv-layers=3>", tmp.File("out"));
  const auto config = ReadJson(tmp.File("out/config.json"));
  CHECK(config["model_type"] == "lckv-llama");
  CHECK(config["architectures"][0] == "LCKVLlamaForCausalLM");
  CHECK(config["layer_types"] == "0_0_2_2_4_4");
  CHECK(config["num_key_value_layers"] == 3);
  const Checkpoint out = OpenCheckpoint(tmp.File("out"));
  for (int l = 0; l < 6; ++l) {
    INFO("layer " << l);
    CHECK((out.tensors.Find(HfTensorName({TensorRole::kKProj, l})) != nullptr) == (l % 2 == 0));
    CHECK((out.tensors.Find(HfTensorName({TensorRole::kVProj, l})) != nullptr) == (l % 2 == 0));
  }
  // KV bytes per token follow the layout: 3 layers x K and V x 8 heads x 32 x float32.
  const auto meta = ReadJson(tmp.File("out/kvfold.json"));
  CHECK(meta["kv_cache_bytes_per_token"]["before"] == 2 * 6 * 8 * 32 * 4);
  CHECK(meta["kv_cache_bytes_per_token"]["after"] == 2 * 3 * 8 * 32 * 4);
  CHECK(meta["vanilla_checkpoint"] == false);
  CHECK(out.config.KvBytesPerToken(out.StoredElementBytes()) == 2 * 3 * 8 * 32 * 4);
  const ModelSummary summary = SummarizeCheckpoint(out);
  CHECK(summary.kv_layers == 3);
  CHECK(summary.layer_types == "0_0_2_2_4_4");
  CHECK(summary.kv_bytes_per_token == 2 * 3 * 8 * 32 * 4);
}

TEST_CASE("lckv without warm-up keeps K/V in the top layer only", "[cross-layer][output][shared]") {
  TempDir tmp;
  RunConvert("stories260K", "lckv<warmup=0,init=mean>", tmp.File("out"));
  const Checkpoint out = OpenCheckpoint(tmp.File("out"));  // layer 0 has no k_proj
  CHECK(LayerTypesText(out.config.kv_layer_of) == "4_4_4_4_4");
  const ModelSummary summary = SummarizeCheckpoint(out);
  CHECK(summary.kv_layers == 1);
  CHECK(summary.kv_bytes_per_token == 2 * 1 * 4 * 8 * 4);
  CHECK(summary.dtype == "F32");
}

TEST_CASE("init=calib beats the reference mean initialisation", "[cross-layer][quality][shared]") {
  TempDir tmp;
  for (const char* shape : {"mlkv<kv-layers=2", "lckv<warmup=1"}) {
    INFO(shape);
    const std::string calib_dir = tmp.File(std::string("calib-") + shape[0]),
                      mean_dir = tmp.File(std::string("mean-") + shape[0]);
    RunConvert("micro-mha", std::string(shape) + ",init=calib>", calib_dir, 16384);
    RunConvert("micro-mha", std::string(shape) + ",init=mean>", mean_dir, 16384);
    const double calib = HeldOutKl("micro-mha", calib_dir), mean = HeldOutKl("micro-mha", mean_dir);
    INFO("KL calib " << calib << ", mean " << mean);
    CHECK(calib < 0.75 * mean);
  }
}

TEST_CASE("sharing composes with gqa-svd: fewer KV heads and fewer KV layers",
          "[cross-layer][output][shared]") {
  TempDir tmp;
  RunConvert("mini-mha", "gqa-svd<kv-heads=4>,mlkv<kv-layers=3>", tmp.File("out"));
  const Checkpoint out = OpenCheckpoint(tmp.File("out"));
  CHECK(out.config.num_key_value_heads == 4);
  CHECK(out.config.KvLayerCount() == 3);
  CHECK(out.config.KvBytesPerToken(4) == 2 * 3 * 4 * 32 * 4);
  // Measured 0.494 (test_converter "sharing composes with gqa-svd*" -s); 0.65 leaves room for
  // BLAS and thread-count noise but not for a fit that lost a quarter of its quality.
  CHECK(HeldOutKl("mini-mha", tmp.File("out"), 4) < 0.65);
  // The other order would fit gqa-svd to K/V statistics of layers that no longer have K/V.
  CHECK_THROWS_WITH(
      RunConvert("mini-mha", "mlkv<kv-layers=3>,gqa-svd<kv-heads=4>", tmp.File("bad")),
      Catch::Contains("gqa-svd needs calibration of the model it runs on"));
  // A model whose layers already share K/V is not converted again.
  ConvertJob again;
  again.input.model = tmp.File("out");
  again.input.calib_text = kvfold::test::CalibFor("mini-mha");
  again.passes = ParsePipeline("mlkv<kv-layers=2>");
  again.output.path = tmp.File("again");
  again.compute.progress = false;
  CHECK_THROWS_WITH(Convert(again), Catch::Contains("already share K/V"));
}

TEST_CASE("bad sharing parameters are refused", "[cross-layer]") {
  const ModelConfig c = LoadModelConfig(SharedPath("models/mini-mha"));
  auto spec = [](const std::string& text) { return ParsePipeline(text).front(); };
  CHECK_THROWS_WITH(CreateMlkv(spec("mlkv<kv-layers=0>"), c),
                    Catch::Contains("between 1 and the model's 6 layers"));
  CHECK_THROWS_WITH(CreateMlkv(spec("mlkv<kv-layers=7>"), c),
                    Catch::Contains("between 1 and the model's 6 layers"));
  CHECK_THROWS_WITH(CreateMlkv(spec("mlkv"), c), Catch::Contains("mlkv: kv-layers is required"));
  CHECK_THROWS_WITH(CreateLckv(spec("lckv<warmup=9>"), c), Catch::Contains("between 0 and"));
  CHECK_THROWS_WITH(CreateLckv(spec("lckv<init=svd>"), c), Catch::Contains("init"));
}

// LCKV's semantics: layers below the top read its K/V of earlier tokens. The paper's parallel
// encoding reaches the token-by-token result after T iterations (each fixes one more token).
TEST_CASE("lckv parallel encoding converges to token-by-token decoding",
          "[cross-layer][lckv][shared]") {
  TempDir tmp;
  RunConvert("stories260K", "lckv<warmup=1>", tmp.File("out"));
  const Checkpoint ck = OpenCheckpoint(tmp.File("out"));
  REQUIRE(ck.config.AttendsAbove());
  std::vector<std::int32_t> ids = {1};
  for (int i = 1; i < 20; ++i) ids.push_back(3 + (i * 37) % 500);
  auto logits = [&](int iterations) {
    RuntimeOptions o;
    o.threads = 2;
    o.lckv_iterations = iterations;
    return ReferenceModel::Load(ck, o)->Logits(ids);
  };
  const auto exact = logits(0);
  CHECK(kvfold::test::MaxAbsDiff(exact, logits(static_cast<int>(ids.size()))) < 1e-4);
  CHECK(kvfold::test::MaxAbsDiff(exact, logits(1)) > 1e-3);  // one iteration reads only zeros
  // Streamed, the iterated layers are read again in the sweep's order, the next one prefetched
  // while the current runs (LayerPrefetch refuses a layer taken out of order). The same float32
  // operations on the same weights: only a BLAS kernel choice could move the result.
  RuntimeOptions streamed;
  streamed.threads = 2;
  streamed.lckv_iterations = 3;
  streamed.stream_layers = true;
  CHECK(kvfold::test::MaxAbsDiff(logits(3), ReferenceModel::Load(ck, streamed)->Logits(ids)) <
        1e-6);
  // Token by token, the first tokens' logits do not depend on later tokens.
  std::vector<std::int32_t> prefix(ids.begin(), ids.begin() + 8);
  RuntimeOptions o;
  o.threads = 2;
  const auto short_run = ReferenceModel::Load(ck, o)->Logits(prefix);
  const std::vector<float> head(exact.begin(),
                                exact.begin() + static_cast<std::ptrdiff_t>(short_run.size()));
  CHECK(kvfold::test::MaxAbsDiff(head, short_run) < 1e-5);
}
