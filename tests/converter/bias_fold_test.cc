// Qwen2-style q/k/v biases must fold with their rows. No shared model has them, so this test
// builds one: stories260K's weights under a qwen2 config, plus random biases.
#include <catch2/catch.hpp>
#include <cmath>
#include <random>

#include "converter/convert.h"
#include "formats/checkpoint.h"
#include "formats/mapped_file.h"
#include "formats/safetensors_writer.h"
#include "runtime_check/reference_model.h"
#include "tests/test_support.h"

using namespace kvfold;
using kvfold::test::SharedPath;
using kvfold::test::TempDir;

namespace {

std::string MakeQwen2(const TempDir& tmp) {
  const std::string src = SharedPath("models/stories260K");
  const std::string dir = tmp.File("qwen2");
  REQUIRE(std::system(("mkdir -p " + dir).c_str()) == 0);
  std::string config = ReadFileToString(src + "/config.json");
  config.replace(config.find("\"llama\""), 7, "\"qwen2\"");
  test::WriteBytes(dir + "/config.json", config);
  test::WriteBytes(dir + "/tokenizer.model", ReadFileToString(src + "/tokenizer.model"));

  const Checkpoint ck = OpenCheckpoint(src);
  std::vector<std::string> blobs;
  std::vector<TensorToWrite> tensors;
  std::mt19937 rng(11);
  std::normal_distribution<float> n01(0.0f, 0.5f);
  for (const auto& [name, ref] : ck.tensors.tensors()) {
    blobs.emplace_back(ref.bytes());
    tensors.push_back({name, ref.entry->dtype, ref.entry->shape, {}});
  }
  for (int l = 0; l < ck.config.num_hidden_layers; ++l) {
    for (auto [proj, rows] :
         {std::pair<const char*, int>{"q_proj", 64}, {"k_proj", 32}, {"v_proj", 32}}) {
      std::vector<float> b(rows);
      for (auto& x : b) x = n01(rng);
      blobs.emplace_back(reinterpret_cast<const char*>(b.data()), b.size() * 4);
      tensors.push_back({"model.layers." + std::to_string(l) + ".self_attn." + proj + ".bias",
                         DType::kF32,
                         {rows},
                         {}});
    }
  }
  for (std::size_t i = 0; i < tensors.size(); ++i) tensors[i].bytes = blobs[i];
  WriteSafetensors(dir + "/model.safetensors", tensors);
  return dir;
}

std::vector<float> Logits(const std::string& dir, bool fused = true) {
  std::vector<std::int32_t> ids = {1};
  for (int i = 1; i < 64; ++i) ids.push_back(3 + (i * 37) % 500);
  RuntimeOptions o;
  o.threads = 2;
  o.fused_cpu_kernels = fused;
  return ReferenceModel::Load(OpenCheckpoint(dir), o)->Logits(ids);
}

double MaxDiff(const std::vector<float>& a, const std::vector<float>& b) {
  REQUIRE(a.size() == b.size());
  double worst = 0;
  for (std::size_t i = 0; i < a.size(); ++i) worst = std::max(worst, double(std::abs(a[i] - b[i])));
  return worst;
}

}  // namespace

TEST_CASE("biases fold with their rows at full rank, in both key modes",
          "[convert][bias][shared]") {
  TempDir tmp;
  const std::string qwen = MakeQwen2(tmp);
  REQUIRE(OpenCheckpoint(qwen).config.qkv_bias);
  const auto original = Logits(qwen);
  // The biases matter: without them the logits differ.
  CHECK(MaxDiff(original, Logits(SharedPath("models/stories260K"))) > 1e-2);
  for (const char* rope : {"commute", "reconstruct"}) {
    INFO(rope);
    ConvertJob o;
    o.input.model = qwen;
    o.input.calib_text = SharedPath("text/tinystories/calib.txt");
    o.passes = ParsePipeline(std::string("gqa-svd<kv-heads=4,rope=") + rope + ">");
    o.output.path = tmp.File(std::string("out-") + rope);
    o.input.calib_tokens = 4096;
    o.compute.progress = false;
    Convert(o);
    CHECK(MaxDiff(original, Logits(o.output.path)) < 1e-4);
    // The reconstruct runtime agrees between the fused and the ATen attention paths.
    CHECK(MaxDiff(Logits(o.output.path, true), Logits(o.output.path, false)) < 2e-5);
  }
}

TEST_CASE("lossy reconstruct conversions run the same in both attention paths",
          "[convert][shared]") {
  TempDir tmp;
  ConvertJob o;
  o.input.model = SharedPath("models/micro-mha");
  o.input.calib_text = SharedPath("text/wikitext-2/valid.tokens.txt");
  o.passes = ParsePipeline("gqa-svd<kv-heads=1,rope=reconstruct>");
  o.output.path = tmp.File("out");
  o.input.calib_tokens = 4096;
  o.compute.progress = false;
  Convert(o);
  CHECK(MaxDiff(Logits(o.output.path, true), Logits(o.output.path, false)) < 2e-5);
}
