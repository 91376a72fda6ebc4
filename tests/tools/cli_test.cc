// The kvfold binary end to end: output formats, and one-line errors with non-zero exits for
// every kind of bad input.
#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>

#include "formats/mapped_file.h"
#include "tests/test_support.h"

using kvfold::test::CommandResult;
using kvfold::test::RunKvfold;
using kvfold::test::SafetensorsBytes;
using kvfold::test::SharedPath;
using kvfold::test::TempDir;

namespace {

// A model folder with stories260K's config and tokenizer around the given weights file.
std::string MakeModelDir(const TempDir& tmp, const std::string& safetensors_bytes) {
  const std::string dir = tmp.File("model");
  REQUIRE(std::system(("mkdir -p " + dir).c_str()) == 0);
  const std::string src = SharedPath("models/stories260K");
  kvfold::test::WriteBytes(dir + "/config.json", kvfold::ReadFileToString(src + "/config.json"));
  kvfold::test::WriteBytes(dir + "/tokenizer.model",
                           kvfold::ReadFileToString(src + "/tokenizer.model"));
  kvfold::test::WriteBytes(dir + "/model.safetensors", safetensors_bytes);
  return dir;
}

void ExpectOneLineError(const CommandResult& r, const std::string& must_contain) {
  INFO("stderr: " << r.err);
  CHECK(r.exit_code != 0);
  CHECK(r.out.empty());
  REQUIRE(!r.err.empty());
  CHECK(r.err.rfind("kvfold: error: ", 0) == 0);
  CHECK(r.err.find('\n') == r.err.size() - 1);  // exactly one line
  CHECK(r.err.find(must_contain) != std::string::npos);
}

}  // namespace

// [once] (here and below): no number these cases check goes through BLAS, so the other OpenBLAS
// kernel family (tests/test_main.cc) would check nothing new.
TEST_CASE("inspect prints the model's KV geometry", "[cli][shared][once]") {
  const auto r = RunKvfold("inspect " + SharedPath("models/mini-mha") + " --json");
  REQUIRE(r.exit_code == 0);
  const auto j = nlohmann::json::parse(r.out);
  CHECK(j["num_key_value_heads"] == 8);
  CHECK(j["head_dim"] == 32);
  CHECK(j["kv_cache_bytes_per_token"] == 12288);
  CHECK(j["parameters"] == 4459776);
  CHECK(j["attention"] == "MHA");
  const auto text = RunKvfold("inspect " + SharedPath("models/stories260K"));
  REQUIRE(text.exit_code == 0);
  CHECK(text.out.find("GQA: 8 query heads, 4 KV heads, head dim 8") != std::string::npos);
  CHECK(text.out.find("1280 bytes/token at F32") != std::string::npos);
}

TEST_CASE("eval --json and --compare agree with the protocol", "[cli][shared]") {
  const std::string text = SharedPath("text/tinystories/eval.txt");
  const auto r =
      RunKvfold("eval " + SharedPath("models/stories260K-mha") + " --text " + text +
                " --max-windows 4 --quiet --json --compare " + SharedPath("models/stories260K"));
  INFO(r.err);
  REQUIRE(r.exit_code == 0);
  CHECK(r.err.empty());  // --quiet
  const auto j = nlohmann::json::parse(r.out);
  CHECK(j["protocol"] == "kvfold-ppl-v1");
  CHECK(j["windows"] == 4);
  CHECK(j["tokens_predicted"] == 1024);
  CHECK(j["compare"]["kl"].get<double>() < 1e-7);  // float32 noise of different GEMM shapes
  CHECK(j["compare"]["top1_agreement"].get<double>() >=
        0.99);  // GEMM shapes differ: a near-tie may flip
  CHECK(j["ppl"].get<double>() == Approx(j["compare"]["ppl"].get<double>()).epsilon(1e-6));
}

TEST_CASE("malformed inputs: one line, non-zero exit", "[cli][errors][shared][once]") {
  TempDir tmp;
  const std::string good_text = SharedPath("text/tinystories/eval.txt");
  const std::string f32x2 = R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})";

  SECTION("truncated safetensors") {
    const std::string whole = SafetensorsBytes(f32x2, std::string(8, '\0'));
    const auto dir = MakeModelDir(tmp, whole.substr(0, 30));
    ExpectOneLineError(RunKvfold("inspect " + dir), "model.safetensors: header length");
  }
  SECTION("header offsets past the end") {
    const auto dir = MakeModelDir(
        tmp, SafetensorsBytes(R"({"a":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}})",
                              std::string(8, '\0')));
    ExpectOneLineError(RunKvfold("inspect " + dir), "past the end");
  }
  SECTION("overlapping tensors") {
    const auto dir = MakeModelDir(
        tmp, SafetensorsBytes(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
                              R"("b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}})",
                              std::string(12, '\0')));
    ExpectOneLineError(RunKvfold("inspect " + dir), "overlap");
  }
  SECTION("shape that does not match the bytes") {
    const auto dir = MakeModelDir(
        tmp, SafetensorsBytes(R"({"a":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}})",
                              std::string(8, '\0')));
    ExpectOneLineError(RunKvfold("inspect " + dir), "shape needs 12 bytes");
  }
  SECTION("unknown dtype") {
    const auto dir = MakeModelDir(
        tmp, SafetensorsBytes(R"({"a":{"dtype":"Q4_K","shape":[2],"data_offsets":[0,8]}})",
                              std::string(8, '\0')));
    ExpectOneLineError(RunKvfold("inspect " + dir), "unknown dtype 'Q4_K'");
  }
  SECTION("valid file whose tensors do not fit the config") {
    const auto dir = MakeModelDir(tmp, SafetensorsBytes(f32x2, std::string(8, '\0')));
    ExpectOneLineError(RunKvfold("inspect " + dir),
                       "tensor problem(s): missing model.embed_tokens.weight");
  }
  SECTION("config missing a required field") {
    const std::string dir = tmp.File("cfg");
    REQUIRE(std::system(("mkdir -p " + dir).c_str()) == 0);
    kvfold::test::WriteBytes(dir + "/config.json", R"({"model_type":"llama","hidden_size":64})");
    ExpectOneLineError(RunKvfold("inspect " + dir),
                       "config.json: missing required field 'num_hidden_layers'");
  }
  SECTION("unknown architecture") {
    const std::string dir = tmp.File("cfg");
    REQUIRE(std::system(("mkdir -p " + dir).c_str()) == 0);
    kvfold::test::WriteBytes(dir + "/config.json", R"({"model_type":"gpt_neox"})");
    ExpectOneLineError(RunKvfold("inspect " + dir), "unsupported model_type 'gpt_neox'");
  }
  SECTION("text with invalid UTF-8") {
    kvfold::test::WriteBytes(tmp.File("bad.txt"), "Once upon a time\xff there");
    ExpectOneLineError(
        RunKvfold("eval " + SharedPath("models/stories260K") + " --text " + tmp.File("bad.txt")),
        "bad.txt: invalid UTF-8 at byte offset 16");
  }
  SECTION("empty text") {
    kvfold::test::WriteBytes(tmp.File("empty.txt"), "");
    ExpectOneLineError(
        RunKvfold("eval " + SharedPath("models/stories260K") + " --text " + tmp.File("empty.txt")),
        "empty.txt: text file is empty");
  }
  SECTION("text shorter than one window") {
    kvfold::test::WriteBytes(tmp.File("short.txt"), "Once upon a time.");
    ExpectOneLineError(
        RunKvfold("eval " + SharedPath("models/stories260K") + " --text " + tmp.File("short.txt")),
        "fewer than one window of 256");
  }
  SECTION("missing model folder") {
    ExpectOneLineError(RunKvfold("inspect " + tmp.File("nope")), "not a model folder");
  }
  SECTION("an unknown device") {
    ExpectOneLineError(RunKvfold("eval " + SharedPath("models/stories260K") + " --text " +
                                 good_text + " --max-windows 1 --quiet --device tpu"),
                       "unknown device");
  }
  SECTION("--version names the BLAS and its core") {
    const auto r = RunKvfold("--version");
    CHECK(r.exit_code == 0);
    CHECK(r.out.find("BLAS: OpenBLAS") != std::string::npos);
    CHECK(r.out.find("(core ") != std::string::npos);
  }
  SECTION("usage errors exit non-zero") {
    CHECK(RunKvfold("eval").exit_code != 0);
    CHECK(RunKvfold("frobnicate").exit_code != 0);
  }
}

TEST_CASE("convert: pass listing, one-line errors, a working conversion",
          "[cli][convert][shared]") {
  const auto list = RunKvfold("convert --print-passes");
  REQUIRE(list.exit_code == 0);
  CHECK(list.out.find("gqa-svd") != std::string::npos);
  CHECK(list.out.find("rope (commute | reconstruct; default commute)") != std::string::npos);

  TempDir tmp;
  const std::string model = SharedPath("models/stories260K");
  const std::string calib = SharedPath("text/tinystories/calib.txt");
  const std::string base = "convert " + model + " --calib " + calib + " --quiet ";
  ExpectOneLineError(RunKvfold(base + "--passes 'gqa-svdd<kv-heads=2>' -o " + tmp.File("o")),
                     "unknown pass 'gqa-svdd'");
  ExpectOneLineError(RunKvfold(base + "--passes 'gqa-svd<kv-heads=3>' -o " + tmp.File("o")),
                     "does not divide the model's 4 KV heads");
  ExpectOneLineError(
      RunKvfold(base + "--passes 'gqa-svd<kv-heads=2>' -o " + tmp.File("no/such/dir")),
      "cannot create the output folder");
  CHECK(kvfold::test::ListDir(tmp.path()).empty());

  const auto ok =
      RunKvfold(base + "--calib-tokens 2048 --passes 'gqa-svd<kv-heads=2>' --time-passes -o " +
                tmp.File("o"));
  INFO(ok.err);
  REQUIRE(ok.exit_code == 0);
  CHECK(ok.err.find("time  calibration") != std::string::npos);
  CHECK(ok.err.find("time  gqa-svd<kv-heads=2,rope=commute>") ==
        std::string::npos);  // rope not given
  CHECK(ok.err.find("time  "
                    "gqa-svd<kv-heads=2,qk-norm=exact,refit=o,ridge=auto,rope=commute,value-weight="
                    "none,weight=query>") != std::string::npos);
  const auto again = RunKvfold(base + "--passes 'gqa-svd<kv-heads=2>' -o " + tmp.File("o"));
  ExpectOneLineError(again, "already exists (use --force to replace it)");
  const auto inspect = RunKvfold("inspect " + tmp.File("o") + " --json");
  REQUIRE(inspect.exit_code == 0);
  CHECK(nlohmann::json::parse(inspect.out)["kv_cache_bytes_per_token"] == 640);
}

TEST_CASE("eval --kv-cache: eviction against the full cache, copy check, bad specs",
          "[cli][eviction][shared]") {
  const std::string model = SharedPath("models/stories260K");
  const std::string text = SharedPath("text/tinystories/eval.txt");
  const auto r = RunKvfold("eval " + model + " --text " + text +
                           " --max-windows 4 --quiet --json --copy 2 --kv-cache "
                           "'evict<policy=l2-low,keep=0.5,skip=0,1>'");
  INFO(r.err);
  REQUIRE(r.exit_code == 0);
  const auto j = nlohmann::json::parse(r.out);
  CHECK(j["kv_cache"]["spec"] == "evict<policy=l2-low,regime=prefill,keep=0.5,skip=0,1>");
  CHECK(j["kv_cache"]["scored_from"] == 128);
  CHECK(j["tokens_predicted"] == 4 * 128);  // only the positions after the prefix
  CHECK(j["compare"]["kl"].get<double>() > 0);
  CHECK(j["compare"]["top1_agreement"].get<double>() < 1.0);
  // Evicting more loses more: keep=0.25 must cost more than keep=0.5 on the same windows.
  const auto fewer = nlohmann::json::parse(
      RunKvfold(
          "eval " + model + " --text " + text +
          " --max-windows 4 --quiet --json --kv-cache 'evict<policy=l2-low,keep=0.25,skip=0,1>'")
          .out);
  CHECK(fewer["compare"]["kl"].get<double>() > j["compare"]["kl"].get<double>());
  CHECK(j["copy"]["sequences"] == 2);
  CHECK(j["copy"]["scored_from"] == 129);

  // keep=1 evicts nothing: the same numbers as the full cache, exactly.
  const auto same =
      nlohmann::json::parse(RunKvfold("eval " + model + " --text " + text +
                                      " --max-windows 2 --quiet --json --kv-cache 'evict<keep=1>'")
                                .out);
  CHECK(same["compare"]["kl"] == 0.0);
  CHECK(same["ppl"] == same["compare"]["ppl"]);

  ExpectOneLineError(
      RunKvfold("eval " + model + " --text " + text + " --kv-cache 'evict<policy=l2-middle>'"),
      "--kv-cache: policy=l2-middle is not one of");
  ExpectOneLineError(
      RunKvfold("eval " + model + " --text " + text + " --kv-cache 'evict<policy=table>'"),
      model + "/kv_eviction_policy.json");
}

TEST_CASE("eval --kv-cache quant<...>: bits reported, fp8 needs calibrated scales",
          "[cli][kv-quant][shared]") {
  const std::string model = SharedPath("models/stories260K");
  const std::string text = SharedPath("text/tinystories/eval.txt");
  const auto r =
      RunKvfold("eval " + model + " --text " + text +
                " --max-windows 2 --quiet --json --kv-cache 'quant<scheme=kivi,bits=4>'");
  INFO(r.err);
  REQUIRE(r.exit_code == 0);
  const auto j = nlohmann::json::parse(r.out);
  CHECK(j["kv_cache"]["spec"] == "quant<scheme=kivi,key-bits=4,value-bits=4,block=32>");
  // Fewer bits: fewer bits stored and more lost. 4-bit KIVI with its fp16 residual window
  // averages well under 16 bits; 2-bit averages less and must cost more KL.
  const auto two = nlohmann::json::parse(
      RunKvfold("eval " + model + " --text " + text +
                " --max-windows 2 --quiet --json --kv-cache 'quant<scheme=kivi,bits=2>'")
          .out);
  CHECK(j["kv_cache"]["average_bits"].get<double>() < 12);
  CHECK(two["kv_cache"]["average_bits"].get<double>() <
        j["kv_cache"]["average_bits"].get<double>() - 1);
  CHECK(j["compare"]["kl"].get<double>() > 0);
  CHECK(two["compare"]["kl"].get<double>() > j["compare"]["kl"].get<double>());
  ExpectOneLineError(
      RunKvfold("eval " + model + " --text " + text + " --kv-cache 'quant<scheme=fp8>'"),
      "model.layers.0.self_attn.k_scale (scheme=fp8 reads the scales the kv-scales pass writes)");
  ExpectOneLineError(
      RunKvfold("eval " + model + " --text " + text + " --kv-cache 'quant<scheme=rtn,bits=9>'"),
      "--kv-cache: bits=9 is not an integer in [0, 8]");
  ExpectOneLineError(RunKvfold("eval " + model + " --text " + text + " --kv-cache 'compress<x=1>'"),
                     "is neither evict<...>, quant<...> nor ggml<...>");
}

TEST_CASE("tokenize prints the ids eval uses, one JSON line per text",
          "[cli][tokenize][shared][once]") {
  TempDir tmp;
  kvfold::test::WriteBytes(tmp.File("a.txt"), "Once upon a time");
  kvfold::test::WriteBytes(tmp.File("b.txt"), "there was a cat.");
  const std::string model = SharedPath("models/stories260K");
  const CommandResult r = RunKvfold("tokenize " + model + " --text " + tmp.File("a.txt") +
                                    " --text " + tmp.File("b.txt") + " --json");
  REQUIRE(r.exit_code == 0);
  const auto newline = r.out.find('\n');
  REQUIRE(newline != std::string::npos);
  const auto a = nlohmann::json::parse(r.out.substr(0, newline))["ids"].get<std::vector<int>>();
  const auto b = nlohmann::json::parse(r.out.substr(newline + 1))["ids"].get<std::vector<int>>();
  CHECK_FALSE(a.empty());
  CHECK_FALSE(b.empty());
  // The same ids as the tokenizer file named directly, and as plain lines without --json.
  const CommandResult direct =
      RunKvfold("tokenize " + model + "/tokenizer.model --text " + tmp.File("a.txt"));
  std::string lines;
  for (int id : a) lines += std::to_string(id) + "\n";
  CHECK(direct.out == lines);
  ExpectOneLineError(RunKvfold("tokenize " + tmp.File("nothing") + " --text " + tmp.File("a.txt")),
                     "no such file or folder");
  ExpectOneLineError(RunKvfold("tokenize " + tmp.path() + " --text " + tmp.File("a.txt")),
                     "no tokenizer.json or tokenizer.model in the folder");
  kvfold::test::WriteBytes(tmp.File("empty.txt"), "");
  ExpectOneLineError(RunKvfold("tokenize " + model + " --text " + tmp.File("a.txt") + " --text " +
                               tmp.File("empty.txt")),
                     "empty.txt");  // nothing printed for the good text before it either
}
