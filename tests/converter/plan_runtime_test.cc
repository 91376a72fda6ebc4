// kvfold plan --runtime llama.cpp|vllm: candidates are what that runtime serves, bytes as it
// stores them, and each plan names its artifact, cache types and serve command.
#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>
#include <string>

#include "calib/ggml_cache_types.h"
#include "converter/analyze.h"
#include "converter/export/gguf_inspect.h"
#include "converter/plan/planner.h"
#include "tests/converter/convert_test_support.h"
#include "tests/test_support.h"

using namespace kvfold;
using kvfold::test::CalibFor;
using kvfold::test::SharedPath;
using kvfold::test::TempDir;

TEST_CASE("what llama.cpp and vLLM serve is the planner's search space for them", "[plan]") {
  ModelConfig c;
  c.num_key_value_heads = 8;
  c.num_hidden_layers = 6;
  std::vector<std::string> passes;
  for (const auto& s : PlanStructures(c, PlanRuntime::kLlamaCpp))
    passes.push_back(PipelineText(s.passes));
  const std::string automatic = "gqa-svd<kv-heads=auto,kv-head-total=";
  CHECK(passes == test::CanonicalPipelines({"", "gqa-svd<kv-heads=4>", "gqa-svd<kv-heads=2>",
                                            "gqa-svd<kv-heads=1>", automatic + "42>",
                                            automatic + "36>", automatic + "30>", automatic + "24>",
                                            automatic + "18>", automatic + "12>"}));
  CHECK(PlanStructures(c, PlanRuntime::kVllm).size() == passes.size());
  // llama.cpp: K at least as many bits as V, block types only where 32 divides head_dim: 28
  // pairs of 7 types, and q4_0 / iq4_nl both ways (4.5 bits each).
  const auto caches = PlanCaches(PlanRuntime::kLlamaCpp, 32);
  CHECK(caches.size() == 29);
  for (const auto& cache : caches) {
    INFO(cache.spec);
    CHECK(cache.spec == "ggml<k=" + cache.cache_k + ",v=" + cache.cache_v + ">");
    CHECK(GgmlBitsPerElement(*ParseGgmlCacheType(cache.cache_k)) >=
          GgmlBitsPerElement(*ParseGgmlCacheType(cache.cache_v)));
  }
  const auto small = PlanCaches(PlanRuntime::kLlamaCpp, 8);
  REQUIRE(small.size() == 1);
  CHECK(small[0].spec == "ggml<k=f16,v=f16>");
  const auto vllm = PlanCaches(PlanRuntime::kVllm, 32);
  REQUIRE(vllm.size() == 2);
  CHECK(vllm[1].needs_fp8_scales);
  CHECK(vllm[1].cache_k == "fp8");
  // Serve commands.
  PlanCandidate k;
  k.kv_heads = {8, 4};
  k.cache_k = "q8_0";
  k.cache_v = "q4_0";
  CHECK(ServingOf(PlanRuntime::kLlamaCpp, k, "m.gguf").serve ==
        "llama-server -m m.gguf -fa on -ctk q8_0 -ctv q4_0");
  k.cache_k = k.cache_v = "fp8";
  CHECK(ServingOf(PlanRuntime::kVllm, k, "out").serve ==
        "vllm serve out --kv-cache-dtype fp8 --trust-remote-code");
  k.kv_heads = {4, 4};
  k.cache_k = k.cache_v = "auto";
  CHECK(ServingOf(PlanRuntime::kVllm, k, "out").serve == "vllm serve out");
  CHECK_THROWS_WITH(ParsePlanRuntime("sglang", "--runtime"),
                    Catch::Contains("--runtime: 'sglang'"));
}

TEST_CASE("plan --runtime llama.cpp: per-layer heads, the artifact and its serve command",
          "[plan][shared]") {
  PlanJob o;
  o.input.model = SharedPath("models/stories260K-mha");
  o.input.calib_text = CalibFor("stories260K");
  o.budgets = {0.375, 0.125};
  o.input.calib_tokens = 4096;
  o.score_windows = 2;
  o.screen_windows = 1;
  o.survivors = 2;
  o.compute.threads = 2;
  o.compute.progress = false;
  o.runtime = PlanRuntime::kLlamaCpp;
  const nlohmann::json j = nlohmann::json::parse(PlanJson(RunPlan(o)).dump());
  CHECK(j["runtime"] == "llama.cpp");
  for (const auto& s : j["structures"]) CHECK(s["convert_seconds"].get<double>() > 0);
  for (const auto& c : j["candidates"]) {
    INFO(c.dump());
    CHECK(c["kv_cache"] == "ggml<k=f16,v=f16>");  // head_dim 8: no block type fits
    CHECK(c["passes"].get<std::string>().find("mlkv") == std::string::npos);
  }
  for (const auto& p : j["plans"]) {
    INFO(p.dump());
    REQUIRE(p["kv_heads"].size() == 5);
    std::int64_t heads = 0;
    for (const auto& n : p["kv_heads"]) heads += n.get<std::int64_t>();
    // 8 heads a layer at 16 bits is the whole: the cache is f16 as the source's is.
    CHECK(p["bytes_fraction"].get<double>() == Approx(heads / 40.0));
    CHECK(p["bytes_fraction"].get<double>() <= p["budget"].get<double>());
    CHECK(p["artifact"] == "gguf");
    CHECK(p["cache_k"] == "f16");
    CHECK(p["serve"] == "llama-server -m OUT.gguf -fa on -ctk f16 -ctv f16");
  }
  // 0.375 of the cache is 15 heads of 40: only a per-layer allocation uses it (uniform: 10).
  CHECK(j["plans"][0]["passes"] ==
        test::CanonicalPipelines({"gqa-svd<kv-heads=auto,kv-head-total=15>"})[0]);
}

TEST_CASE("convert --kv-budget --runtime llama.cpp writes the GGUF and records how to serve it",
          "[plan][cli][shared]") {
  TempDir tmp;
  const std::string common = "convert " + SharedPath("models/stories260K-mha") + " --calib " +
                             CalibFor("stories260K") + " --calib-tokens 4096 --threads 2 --quiet";
  const auto r =
      test::RunKvfold(common + " --kv-budget 0.375 --runtime llama.cpp -o " + tmp.File("p.gguf"));
  INFO(r.err);
  REQUIRE(r.exit_code == 0);
  const std::string serve = "llama-server -m " + tmp.File("p.gguf") + " -fa on -ctk f16 -ctv f16";
  CHECK(r.out.find("serve: " + serve) != std::string::npos);
  const nlohmann::json g = nlohmann::json::parse(InspectGguf(tmp.File("p.gguf")).dump());
  CHECK(g["architecture"] == "deci");
  const auto meta = test::RunKvfold("inspect " + tmp.File("p.gguf") + " --json");
  CHECK(meta.out.find("deci") != std::string::npos);
  // The plan, with its serve command, travels in the GGUF's kvfold.json.
  const auto header = test::ReadBytes(tmp.File("p.gguf"));
  CHECK(header.find("\"serve\":\"" + serve + "\"") != std::string::npos);
  CHECK(test::RunKvfold(common + " --kv-budget 0.375 --runtime llama.cpp --format hf -o " +
                        tmp.File("x"))
            .err.find("--runtime: llama.cpp runs a GGUF file: drop --format") != std::string::npos);
  CHECK(test::RunKvfold(common + " --runtime vllm --passes kv-scales -o " + tmp.File("x"))
            .err.find("--runtime: goes with --kv-budget") != std::string::npos);
}

TEST_CASE("kvfold report --runtime: one frontier per runtime, each runtime's plans",
          "[plan][shared]") {
  TempDir tmp;
  ReportJob o = test::StoriesQuarterBudgetReport(tmp.File("report.html"));
  o.plan_runtimes = {PlanRuntime::kKvfold, PlanRuntime::kLlamaCpp};
  Analyze(o);
  const auto report = test::ReadJson(tmp.File("report.json"));
  CHECK(report["plan"]["runtime"] == "kvfold");
  REQUIRE(report["plan"]["other_runtimes"].size() == 1);
  CHECK(report["plan"]["other_runtimes"][0]["runtime"] == "llama.cpp");
  const std::string html = test::ReadBytes(tmp.File("report.html"));
  CHECK(html.find("frontier (kvfold)") != std::string::npos);
  CHECK(html.find("frontier (llama.cpp)") != std::string::npos);
  CHECK(html.find("<h3>Plans llama.cpp serves</h3>") != std::string::npos);
  CHECK(html.find("llama-server -m OUT.gguf") != std::string::npos);
}
