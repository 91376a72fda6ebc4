#include "converter/convert.h"

#include <algorithm>
#include <catch2/catch.hpp>
#include <cmath>
#include <filesystem>
#include <nlohmann/json.hpp>

#include "calib/text.h"
#include "calib/tokenizer.h"
#include "calib/windows.h"
#include "formats/checkpoint.h"
#include "formats/error.h"
#include "formats/mapped_file.h"
#include "formats/sha256.h"
#include "runtime_check/evaluate.h"
#include "runtime_check/reference_model.h"
#include "tests/converter/convert_test_support.h"
#include "tests/test_support.h"

using namespace kvfold;
using kvfold::test::CalibFor;
using kvfold::test::ListDir;
using kvfold::test::MaxLogitDiff;
using kvfold::test::ReadBytes;
using kvfold::test::ReadJson;
using kvfold::test::RunConvert;
using kvfold::test::SharedPath;
using kvfold::test::TempDir;

TEST_CASE("full-rank conversions reproduce the original logits", "[convert][exact][shared]") {
  for (const char* model :
       {"stories260K", "stories260K-mha", "micro-mha", "mini-mha", "mini-mha-bf16-sharded"}) {
    const Checkpoint ck = OpenCheckpoint(SharedPath(std::string("models/") + model));
    const std::string kv = std::to_string(ck.config.num_key_value_heads);
    // BF16 storage rounds the folded weights once more; that is all the difference allowed.
    const double tolerance = ck.StoredElementBytes() == 2 ? 5e-2 : 1e-4;
    for (const char* rope : {"commute", "reconstruct"}) {
      INFO(model << " rope=" << rope);
      TempDir tmp;
      // 2048 calibration tokens, not 8192: a full-rank fold is exact on any statistics.
      RunConvert(model, "gqa-svd<kv-heads=" + kv + ",rope=" + rope + ">", tmp.File("out"), 2048);
      CHECK(MaxLogitDiff(SharedPath(std::string("models/") + model), tmp.File("out")) < tolerance);
    }
  }
}

TEST_CASE("duplicated KV heads fold back losslessly", "[convert][exact][shared]") {
  TempDir tmp;
  for (const char* passes : {"gqa-svd<kv-heads=4>", "gqa-meanpool<kv-heads=4>"}) {
    INFO(passes);
    const std::string out = tmp.File(std::string("out") + passes[4]);
    RunConvert("stories260K-mha", passes, out);
    CHECK(MaxLogitDiff(SharedPath("models/stories260K"), out) < 1e-4);
    CHECK(OpenCheckpoint(out).config.num_key_value_heads == 4);
  }
}

TEST_CASE("gqa-svd beats mean-pooling on held-out text", "[convert][quality][shared]") {
  TempDir tmp;
  const Checkpoint original = OpenCheckpoint(SharedPath("models/stories260K"));
  const auto tok = Tokenizer::Load(original.tokenizer_path);
  const auto windows =
      CutWindows(tok->Encode(LoadText(SharedPath("text/tinystories/eval.txt"))), 256, 8, "eval");
  const auto reference = ReferenceModel::Load(original, {"cpu", 2});
  EvalOptions quiet;
  quiet.progress = false;
  auto compare = [&](const std::string& passes, const std::string& out) {
    RunConvert("stories260K", passes, out);
    const Checkpoint ck = OpenCheckpoint(out);
    return CompareModels(*reference, *ReferenceModel::Load(ck, {"cpu", 2}), windows, tok->bos_id(),
                         quiet);
  };
  const ComparisonResult mean = compare("gqa-meanpool<kv-heads=2>", tmp.File("mean"));
  for (const char* passes :
       {"gqa-svd<kv-heads=2,rope=commute>", "gqa-svd<kv-heads=2,rope=reconstruct>",
        "gqa-svd<kv-heads=2,rope=commute,weight=none>"}) {
    INFO(passes);
    const ComparisonResult svd = compare(passes, tmp.File("svd"));
    CHECK(svd.other.ppl < mean.other.ppl);
    CHECK(svd.kl < mean.kl);
    REQUIRE(std::system(("rm -rf " + tmp.File("svd")).c_str()) == 0);
  }
}

// [once]: two runs compared with each other (and a description): under the other OpenBLAS kernel
// family too they are the same kernels twice (tests/test_main.cc).
TEST_CASE("outputs are complete, described and byte-identical across runs",
          "[convert][output][shared][once]") {
  TempDir tmp;
  // 2048 calibration tokens: whatever the statistics, a rerun must write the same bytes.
  RunConvert("mini-mha-bf16-sharded", "gqa-svd<kv-heads=2,rope=reconstruct>", tmp.File("a"), 2048);
  RunConvert("mini-mha-bf16-sharded", "gqa-svd<kv-heads=2,rope=reconstruct>", tmp.File("b"), 2048);
  const auto files = ListDir(tmp.File("a"));
  CHECK(files == ListDir(tmp.File("b")));
  for (const auto& f : files) {
    INFO(f);
    CHECK(ReadBytes(tmp.File("a/" + f)) == ReadBytes(tmp.File("b/" + f)));
  }
  // Sharded and BF16 like the source; tokenizer copied; config and kvfold.json describe it.
  CHECK(std::count(files.begin(), files.end(), "model.safetensors.index.json") == 1);
  CHECK(std::count(files.begin(), files.end(), "tokenizer.model") == 1);
  const Checkpoint out = OpenCheckpoint(tmp.File("a"));
  CHECK(out.StoredElementBytes() == 2);
  CHECK(out.tensors.files().size() >= 2);
  CHECK(out.config.num_key_value_heads == 2);
  CHECK(out.config.key_projection_heads == 8);
  CHECK(out.config.head_dim == 32);
  const auto meta = ReadJson(tmp.File("a/kvfold.json"));
  CHECK(meta["format_version"] == 1);
  CHECK(meta["pipeline"] ==
        "gqa-svd<kv-heads=2,qk-norm=exact,refit=o,ridge=auto,rope=reconstruct,value-weight=none,"
        "weight=query>");  // defaults recorded
  CHECK(meta["vanilla_checkpoint"] == false);
  CHECK(meta["calibration"]["tokens"] == 2048);
  CHECK(meta["calibration"]["sha256"].get<std::string>().size() == 64);
  // The source's hash (taken on a thread of its own during the run) is the SHA-256 of its
  // config.json and weight files, read here whole instead of through the mapped chunks.
  const Checkpoint source = OpenCheckpoint(SharedPath("models/mini-mha-bf16-sharded"));
  REQUIRE(source.tensors.files().size() >= 2);
  Sha256 expected;
  expected.Update(ReadBytes(source.dir + "/config.json"));
  for (const auto& f : source.tensors.files()) expected.Update(ReadBytes(f->path()));
  CHECK(meta["source"]["sha256"] == expected.HexDigest());
  CHECK(meta["kv_cache_bytes_per_token"]["before"] == 2 * 6 * 8 * 32 * 2);
  CHECK(meta["kv_cache_bytes_per_token"]["after"] == 2 * 6 * 2 * 32 * 2);
  CHECK(meta["passes"][0]["layers"].size() == 6);
}

TEST_CASE("a commute conversion is a vanilla GQA checkpoint", "[convert][output][shared]") {
  TempDir tmp;
  RunConvert("micro-mha", "gqa-svd<kv-heads=2,rope=commute>", tmp.File("out"));
  const auto config = ReadJson(tmp.File("out/config.json"));
  CHECK(config["num_key_value_heads"] == 2);
  CHECK_FALSE(config.contains("kvfold_key_reconstruct"));
  CHECK(config["model_type"] == "llama");
  const Checkpoint out = OpenCheckpoint(tmp.File("out"));
  CHECK(out.tensors.Find("model.layers.0.self_attn.k_cache_proj.weight") == nullptr);
  CHECK(out.Tensor({TensorRole::kKProj, 0}).entry->shape == std::vector<std::int64_t>{64, 128});
  CHECK(ReadJson(tmp.File("out/kvfold.json"))["vanilla_checkpoint"] == true);
}

TEST_CASE("existing outputs are refused without --force and replaced with it",
          "[convert][output][shared]") {
  TempDir tmp;
  const std::string out = tmp.File("out");
  REQUIRE(std::system(("mkdir -p " + out + " && echo keep > " + out + "/marker").c_str()) == 0);
  CHECK_THROWS_WITH(RunConvert("stories260K", "gqa-meanpool<kv-heads=2>", out),
                    out + ": already exists (use --force to replace it)");
  CHECK(ReadBytes(out + "/marker") == "keep\n");
  ConvertJob o;
  o.input.model = SharedPath("models/stories260K");
  o.input.calib_text = CalibFor("stories260K");
  o.passes = ParsePipeline("gqa-meanpool<kv-heads=2>");
  o.output.path = out;
  o.output.force = true;
  o.compute.progress = false;
  // --force replaces only what kvfold wrote: a folder without kvfold.json is someone's data.
  CHECK_THROWS_WITH(
      Convert(o),
      Catch::Contains("has no kvfold.json; --force only replaces a folder kvfold wrote"));
  CHECK(ReadBytes(out + "/marker") == "keep\n");
  // Nor is a name proof: the kvfold.json must be kvfold's, and nothing else of the user's there.
  test::WriteBytes(out + "/kvfold.json", "{}");
  CHECK_THROWS_WITH(Convert(o), Catch::Contains("its kvfold.json is not one kvfold wrote"));
  CHECK(ReadBytes(out + "/marker") == "keep\n");
  o.output.path = tmp.File("ours");
  o.output.force = false;
  Convert(o);
  o.output.force = true;
  Convert(o);  // kvfold's own output is replaced
  CHECK(ListDir(o.output.path).size() > 3);
  auto left = ListDir(tmp.path());
  std::sort(left.begin(), left.end());
  CHECK(left == std::vector<std::string>{"ours", "out"});  // nothing left behind
}

TEST_CASE("a failing conversion leaves no output", "[convert][output][shared]") {
  TempDir tmp;
  CHECK_THROWS_WITH(RunConvert("mini-mha", "gqa-svd<kv-heads=3>", tmp.File("out")),
                    Catch::Contains("does not divide"));
  // Fails in the layer loop, after calibration started and the output was staged: 4 KV heads
  // cannot come from the 2 gqa-svd left.
  CHECK_THROWS_WITH(
      RunConvert("mini-mha", "gqa-svd<kv-heads=2>,gqa-meanpool<kv-heads=4>", tmp.File("out")),
      Catch::Contains("does not divide the 2 KV heads an earlier pass left"));
  CHECK(ListDir(tmp.path()).empty());
}

TEST_CASE("a conversion failing after its output is written leaves the previous output intact",
          "[convert][output][shared]") {
  // The report's evaluation text is too short for one window: the failure comes after the
  // weights and kvfold.json are in the staging folder, so the clean-up path really runs.
  TempDir tmp;
  test::WriteBytes(tmp.File("short.txt"), "Once upon a time.");
  ConvertJob o;
  o.input.model = SharedPath("models/stories260K");
  o.input.calib_text = CalibFor("stories260K");
  o.input.calib_tokens = 1024;
  o.passes = ParsePipeline("gqa-meanpool<kv-heads=2>");
  o.output.path = tmp.File("out");
  o.report.path = tmp.File("out/report.html");  // inside the output: part of the atomic output
  o.report.eval_text = tmp.File("short.txt");
  o.compute.progress = false;
  CHECK_THROWS_WITH(Convert(o), Catch::Contains("fewer than one window"));
  CHECK(ListDir(tmp.path()) == std::vector<std::string>{"short.txt"});
  // The same failure under --force keeps the previous output, byte for byte.
  RunConvert("stories260K", "gqa-meanpool<kv-heads=1>", tmp.File("out"));
  const std::string before = ReadBytes(tmp.File("out/model.safetensors"));
  o.output.force = true;
  CHECK_THROWS_WITH(Convert(o), Catch::Contains("fewer than one window"));
  CHECK(ReadBytes(tmp.File("out/model.safetensors")) == before);
  CHECK(ListDir(tmp.path()) == (std::vector<std::string>{"out", "short.txt"}));
}

TEST_CASE("--reproduce reruns a recorded conversion byte for byte", "[convert][output][shared]") {
  TempDir tmp;
  RunConvert("stories260K", "kv-mixed<bits=2,protect=1>", tmp.File("a"), 2048);
  const auto meta = ReadJson(tmp.File("a/kvfold.json"));
  // Every parameter is recorded, defaults included, so a changed default cannot change a rerun.
  CHECK(meta["pipeline"] ==
        "kv-mixed<bits=2,group=0,hi-bits=16,keep=0.2,key-axis=channel,key-bits=2,"
        "protect=1,recent=0.5,value-axis=token,value-bits=2>");
  CHECK(meta["calibration"]["threads"] == 2);
  ConvertJob given;
  given.output.path = tmp.File("b");
  given.compute.progress = false;
  Convert(ReproduceJob(tmp.File("a/kvfold.json"), given));
  const auto files = ListDir(tmp.File("a"));
  REQUIRE(files == ListDir(tmp.File("b")));
  for (const auto& f : files) {
    INFO(f);
    CHECK(ReadBytes(tmp.File("a/" + f)) == ReadBytes(tmp.File("b/" + f)));
  }
  // Other inputs than the recorded ones are refused by hash, before any output.
  given.output.path = tmp.File("c");
  given.input.calib_text = SharedPath("text/tinystories/eval.txt");
  CHECK_THROWS_WITH(Convert(ReproduceJob(tmp.File("a/kvfold.json"), given)),
                    Catch::Contains("is not the calibration text the recorded conversion read"));
  const std::string model = tmp.File("model");  // the same model, one byte of config.json added
  REQUIRE(std::system(("cp -r " + SharedPath("models/stories260K") + " " + model + " && echo >> " +
                       model + "/config.json")
                          .c_str()) == 0);
  given.input.calib_text.clear();
  given.input.model = model;
  CHECK_THROWS_WITH(Convert(ReproduceJob(tmp.File("a/kvfold.json"), given)),
                    Catch::Contains("is not the checkpoint the recorded conversion read"));
  CHECK_FALSE(std::filesystem::exists(tmp.File("c")));
}

TEST_CASE("outputs never overlap the input, and only the model's own files travel",
          "[convert][output][shared]") {
  TempDir tmp;
  // A model folder as users have them: stale .bin shards, a subfolder, a symlink out of it.
  const std::string src = SharedPath("models/stories260K");
  const std::string model = tmp.File("model");
  REQUIRE(std::system(("cp -r " + src + " " + model + " && mkdir " + model + "/original && " +
                       "echo stale > " + model + "/pytorch_model-00001-of-00001.bin && " +
                       "echo '{}' > " + model + "/pytorch_model.bin.index.json && " +
                       "echo license > " + model + "/LICENSE && " + "ln -s /etc/passwd " + model +
                       "/README.md")
                          .c_str()) == 0);
  for (const std::string& out : {model, model + "/out", tmp.path()}) {
    INFO(out);
    ConvertJob o;
    o.input.model = model;
    o.input.calib_text = CalibFor("stories260K");
    o.passes = ParsePipeline("gqa-meanpool<kv-heads=2>");
    o.output.path = out;
    o.output.force = true;
    o.compute.progress = false;
    CHECK_THROWS_WITH(Convert(o), Catch::Contains("the input model folder"));
  }
  CHECK(ReadBytes(model + "/pytorch_model-00001-of-00001.bin") == "stale\n");
  ConvertJob o;
  o.input.model = model;
  o.input.calib_text = CalibFor("stories260K");
  o.passes = ParsePipeline("gqa-meanpool<kv-heads=2>");
  o.output.path = tmp.File("out");
  o.compute.progress = false;
  Convert(o);
  CHECK(ListDir(tmp.File("out")) ==
        (std::vector<std::string>{"LICENSE", "config.json", "generation_config.json", "kvfold.json",
                                  "model.safetensors", "special_tokens_map.json", "tokenizer.model",
                                  "tokenizer_config.json"}));
  const auto not_copied = ReadJson(tmp.File("out/kvfold.json"))["not_copied"];
  CHECK(not_copied.size() == 4);
  CHECK(not_copied.dump().find("README.md (a symbolic link leading out of the model folder)") !=
        std::string::npos);
  CHECK(not_copied.dump().find("original (a folder)") != std::string::npos);
}

TEST_CASE("a HuggingFace hub cache snapshot (links into ../../blobs) converts with its tokenizer",
          "[convert][output][shared]") {
  TempDir tmp;
  const std::string src = SharedPath("models/stories260K");
  const std::string repo = tmp.File("models--org--stories"), snapshot = repo + "/snapshots/abc123";
  REQUIRE(std::system(("mkdir -p " + repo + "/blobs " + snapshot).c_str()) == 0);
  for (const char* f :
       {"config.json", "model.safetensors", "tokenizer.model", "tokenizer_config.json"}) {
    const std::string blob = std::string("blob-") + f;  // the hub names blobs by hash
    REQUIRE(std::system(("cp " + src + "/" + f + " " + repo + "/blobs/" + blob +
                         " && ln -s ../../blobs/" + blob + " " + snapshot + "/" + f)
                            .c_str()) == 0);
  }
  ConvertJob o;
  o.input.model = snapshot;
  o.input.calib_text = CalibFor("stories260K");
  o.input.calib_tokens = 1024;
  o.passes = ParsePipeline("gqa-meanpool<kv-heads=2>");
  o.output.path = tmp.File("out");
  o.compute.progress = false;
  Convert(o);
  CHECK(ListDir(tmp.File("out")) ==
        (std::vector<std::string>{"config.json", "kvfold.json", "model.safetensors",
                                  "tokenizer.model", "tokenizer_config.json"}));
  CHECK(ReadBytes(tmp.File("out/tokenizer.model")) == ReadBytes(src + "/tokenizer.model"));
}

// [once]: the same operations in the same order twice, compared byte for byte: the other OpenBLAS
// kernel family runs the same kernels in both (tests/test_main.cc).
TEST_CASE("calibrated on the source, layer by layer inside the sweep equals pass after pass",
          "[convert][sweep][shared][once]") {
  // The sweep hands each layer-local pass the same statistics (each layer's sums merged in slot
  // order, as the whole-model merge adds them) and the same tensors: the outputs are the same
  // bytes. A pass that read another layer's statistics or tensors, or statistics merged in
  // another order, would change them.
  const char* pipelines[] = {"gqa-svd<kv-heads=2,refit=none>",
                             "gqa-svd<kv-heads=4,refit=none,rope=reconstruct,weight=none>",
                             "kv-scales<strategy=head>", "kv-balance", "gqa-meanpool<kv-heads=2>"};
  for (const char* passes : pipelines) {
    INFO(passes);
    TempDir tmp;
    for (const bool layer_by_layer : {true, false}) {
      ConvertJob o;
      o.input.model = SharedPath("models/mini-mha-bf16-sharded");
      o.input.calib_text = CalibFor("mini-mha");
      o.passes = ParsePipeline(passes);
      o.output.path = tmp.File(layer_by_layer ? "sweep" : "whole");
      o.report.path = o.output.path + "/report.html";  // spectra built layer by layer too
      o.input.calib_tokens = 2048;
      o.compute.threads = 2;
      o.compute.progress = false;
      o.calibrate_on = "source";
      o.layer_by_layer = layer_by_layer;
      Convert(o);
    }
    const auto files = ListDir(tmp.File("sweep"));
    CHECK(files == ListDir(tmp.File("whole")));
    for (const auto& f : files) {
      if (f == "report.html" || f == "report.json") continue;  // they hold timings
      INFO(f);
      CHECK(ReadBytes(tmp.File("sweep/" + f)) == ReadBytes(tmp.File("whole/" + f)));
    }
    auto spectra = [&](const std::string& dir) {
      return ReadJson(tmp.File(dir + "/report.json"))["spectra"].dump();
    };
    CHECK(spectra("sweep") == spectra("whole"));
  }
}

namespace {

// The float32 values of tensor `name` in the checkpoint at `dir`.
std::vector<float> TensorValues(const std::string& dir, const std::string& name) {
  return OpenCheckpoint(dir).tensors.ReadF32(name);
}

double WorstRelative(const std::vector<float>& a, const std::vector<float>& b) {
  REQUIRE(a.size() == b.size());
  double worst = 0;
  for (std::size_t i = 0; i < a.size(); ++i) {
    worst =
        std::max(worst, std::abs(double(a[i]) - b[i]) / std::max(std::abs(double(a[i])), 1e-30));
  }
  return worst;
}

}  // namespace

TEST_CASE("one pipeline calibrated on converted layers equals two conversions",
          "[convert][sweep][shared]") {
  // gqa-svd then kv-scales in one kvfold convert measures the scales on the converted K/V, with
  // every layer fed what the converted layers below produce: exactly what kv-scales measures
  // in a second kvfold convert of gqa-svd's output.
  struct Case {
    const char* first;
    const char* second;
  };
  // (A K/V-changing second pass is not such a case: a second convert's first pass was calibrated
  // on layers only the first pass had converted.)
  const Case cases[] = {{"gqa-svd<kv-heads=2>", "kv-scales<strategy=head>"},
                        {"gqa-svd<kv-heads=4,rope=commute>", "kv-mixed<bits=2>"}};
  for (const Case& c : cases) {
    INFO(c.first << " then " << c.second);
    TempDir tmp;
    RunConvert("mini-mha-bf16-sharded", std::string(c.first) + "," + c.second, tmp.File("one"),
               2048);
    RunConvert("mini-mha-bf16-sharded", c.first, tmp.File("first"), 2048);
    ConvertJob o;
    o.input.model = tmp.File("first");
    o.input.calib_text = CalibFor("mini-mha");
    o.passes = ParsePipeline(c.second);
    o.output.path = tmp.File("two");
    o.input.calib_tokens = 2048;
    o.compute.threads = 2;
    o.compute.progress = false;
    Convert(o);
    const Checkpoint one = OpenCheckpoint(tmp.File("one"));
    for (int l = 0; l < one.config.num_hidden_layers; ++l) {
      const std::string prefix = "model.layers." + std::to_string(l) + ".self_attn.";
      for (const char* t : {"k_proj.weight", "v_proj.weight", "q_proj.weight", "o_proj.weight",
                            "k_scale", "v_scale"}) {
        if (one.tensors.Find(prefix + t) == nullptr) continue;
        INFO(prefix + t);
        // The same operations on the same values in the same order; 1e-6 only allows BLAS to
        // pick another kernel for a product whose shape differs between the two runs.
        CHECK(WorstRelative(TensorValues(tmp.File("one"), prefix + t),
                            TensorValues(tmp.File("two"), prefix + t)) < 1e-6);
      }
    }
    if (std::string(c.second).rfind("kv-mixed", 0) == 0) {  // the table's calibrated key ranges
      const TensorStore a = TensorStore::OpenFile(tmp.File("one/kv_mixed_precision.safetensors"));
      const TensorStore b = TensorStore::OpenFile(tmp.File("two/kv_mixed_precision.safetensors"));
      REQUIRE(a.Names() == b.Names());
      for (const auto& name : a.Names()) {
        INFO(name);
        CHECK(WorstRelative(a.ReadF32(name), b.ReadF32(name)) < 1e-6);
      }
    }
    CHECK(ReadJson(tmp.File("one/kvfold.json"))["calibration"]["activations"] == "converted");
  }
}

TEST_CASE("a conversion whose hidden states spill to a file writes the same bytes",
          "[convert][sweep][shared]") {
  // The converted mode steps every calibration batch through each layer; with no memory for
  // hidden states each batch is read from the spill file and written back per layer, and the
  // o_proj refit's contexts before the fold (gqa-svd's default refit=o) wait in a spill file too.
  TempDir tmp;
  for (const std::uint64_t budget : {kDefaultHiddenMemoryBytes, std::uint64_t{0}}) {
    ConvertJob o;
    o.input.model = SharedPath("models/stories260K");
    o.input.calib_text = CalibFor("stories260K");
    o.passes = ParsePipeline("gqa-svd<kv-heads=2>,kv-scales");
    o.output.path = tmp.File(budget == 0 ? "spilled" : "resident");
    o.input.calib_tokens = 6144;  // three batches of about 2048 tokens
    o.compute.threads = 2;
    o.compute.progress = false;
    o.compute.hidden_memory_bytes = budget;
    Convert(o);
  }
  for (const std::string f : {"model.safetensors", "config.json"}) {
    INFO(f);
    CHECK(ReadBytes(tmp.File("spilled/" + f)) == ReadBytes(tmp.File("resident/" + f)));
  }
}

TEST_CASE("calibrating on pre-tokenized ids (.npy, JSON Lines) converts exactly as on the text",
          "[convert][calib][shared]") {
  // A calibration set built in Python reproduces the conversion: the same ids give the same bytes.
  TempDir tmp;
  const std::string text = CalibFor("stories260K");
  const auto tok = Tokenizer::Load(SharedPath("models/stories260K/tokenizer.model"));
  std::vector<std::int32_t> ids = tok->Encode(LoadText(text));
  ids.resize(1024);
  test::WriteBytes(tmp.File("calib.npy"), test::NpyBytes("<i4", "(4, 256)", ids));
  std::string jsonl;
  for (int row = 0; row < 4; ++row) {
    jsonl += "{\"input_ids\": " +
             nlohmann::json(
                 std::vector<std::int32_t>(ids.begin() + row * 256, ids.begin() + (row + 1) * 256))
                 .dump() +
             "}\n";
  }
  test::WriteBytes(tmp.File("calib.jsonl"), jsonl);
  std::vector<std::string> weights;
  for (const std::string& calib : {text, tmp.File("calib.npy"), tmp.File("calib.jsonl")}) {
    ConvertJob o;
    o.input.model = SharedPath("models/stories260K");
    o.input.calib_text = calib;
    o.input.calib_tokens = 1024;
    o.passes = ParsePipeline("gqa-svd<kv-heads=2>,kv-scales");
    o.output.path = tmp.File("out" + std::to_string(weights.size()));
    o.compute.progress = false;
    Convert(o);
    weights.push_back(ReadBytes(o.output.path + "/model.safetensors"));
  }
  CHECK(weights[1] == weights[0]);  // same ids, same code path: the same bytes
  CHECK(weights[2] == weights[0]);
}
