// The KV budget planner (converter/plan/): its search space, and on a shared model that each
// plan fits its budget, is the best candidate scored within it, and measures what an
// independent conversion and comparison measure.
#include <catch2/catch.hpp>
#include <cmath>
#include <string>

#include "calib/calibration_input.h"
#include "calib/tokenizer.h"
#include "calib/windows.h"
#include "converter/analyze.h"
#include "converter/convert.h"
#include "converter/plan/planner.h"
#include "formats/checkpoint.h"
#include "runtime_check/cache_policy_spec.h"
#include "runtime_check/evaluate.h"
#include "runtime_check/reference_model.h"
#include "tests/converter/convert_test_support.h"
#include "tests/test_support.h"

using namespace kvfold;
using kvfold::test::CalibFor;
using kvfold::test::SharedPath;
using kvfold::test::TempDir;

namespace {

PlanJob SmallPlan(const std::vector<double>& budgets) {
  PlanJob o;
  o.input.model = SharedPath("models/stories260K");
  o.input.calib_text = CalibFor("stories260K");
  o.budgets = budgets;
  o.input.calib_tokens = 4096;
  o.score_windows = 4;
  o.screen_windows = 1;
  o.survivors = 2;
  o.compute.threads = 2;
  o.compute.progress = false;
  return o;
}

}  // namespace

TEST_CASE("the planner's search space", "[plan]") {
  ModelConfig c;
  c.model_type = "llama";
  c.num_key_value_heads = 8;
  c.num_hidden_layers = 6;
  std::vector<std::string> passes;
  for (const auto& s : PlanStructures(c)) passes.push_back(PipelineText(s.passes));
  CHECK(passes ==
        test::CanonicalPipelines({"", "gqa-svd<kv-heads=4>", "gqa-svd<kv-heads=2>",
                                  "gqa-svd<kv-heads=1>", "mlkv<kv-layers=3>", "mlkv<kv-layers=1>",
                                  "gqa-svd<kv-heads=4,refit=none>,mlkv<kv-layers=3>"}));
  // plan --heal: each conversion again, healed, in its family; kv-scales may follow a healed
  // structure where it may follow the structure (not after mlkv's whole-model sweep)
  passes.clear();
  const auto plain = PlanStructures(c);
  const auto healed = WithHealedStructures(plain, c);
  REQUIRE(healed.size() == 2 * plain.size() - 1);
  for (std::size_t i = plain.size(); i < healed.size(); ++i) {
    const PlanStructure& from = plain[i - plain.size() + 1];
    passes.push_back(PipelineText(healed[i].passes));
    CHECK(healed[i].family == "healed " + from.family);
    CHECK(healed[i].fp8_scales == from.fp8_scales);
  }
  CHECK(passes ==
        test::CanonicalPipelines({"gqa-svd<kv-heads=4>,heal", "gqa-svd<kv-heads=2>,heal",
                                  "gqa-svd<kv-heads=1>,heal", "mlkv<kv-layers=3>,heal",
                                  "mlkv<kv-layers=1>,heal",
                                  "gqa-svd<kv-heads=4,refit=none>,mlkv<kv-layers=3>,heal"}));
  c.qk_norm = true;  // Qwen3: the approximate folds (checked below), nothing across layers
  CHECK(PlanStructures(c).size() == 4);
  c.qk_norm = false;
  c.o_bias = true;  // heal refuses an o_proj bias: nothing healed is offered
  CHECK(WithHealedStructures(PlanStructures(c), c).size() == PlanStructures(c).size());
  c.o_bias = false;
  const auto structures = PlanStructures(c);
  const auto caches = PlanCaches();
  REQUIRE(caches[1].spec == "quant<scheme=fp8>");
  CHECK(PipelineText(Combine(structures, 0, caches, 1).passes) ==
        "kv-scales<format=vllm-fp8,strategy=tensor>");  // FP8 needs the scales
  CHECK(PipelineText(Combine(structures, 1, caches, 1).passes) ==
        PipelineText(ParsePipeline("gqa-svd<kv-heads=4>,kv-scales")));
  CHECK(Combine(structures, 1, caches, 1).family == "heads+quant");
  CHECK(Combine(structures, 0, caches, 0).family == "none");
  CHECK(Combine(structures, 4, caches, 0).family == "cross-layer");
  // Per-layer precision: a probe quantizes one layer alone; the protected caches keep the most
  // sensitive one or two layers at 16 bits, listed in ascending order.
  CHECK(LayerProbeCache(3, 1) == "quant<scheme=rtn,key-bits=2,value-bits=2,protect=0,2>");
  std::size_t low_bits = 0;
  for (const auto& cache : caches) low_bits += cache.low_bits ? 1 : 0;
  CHECK(low_bits ==
        15);  // RTN pairs with a side at 3 or 2 bits (12 of 16) and KIVI's 4/2, 2/4, 2/2
  const auto protected_caches = ProtectedCaches(caches, {2, 0, 1});
  REQUIRE(protected_caches.size() == 2 * low_bits);
  CHECK(protected_caches.front().spec == "quant<scheme=rtn,key-bits=8,value-bits=3,protect=2>");
  CHECK(protected_caches.back().spec == "quant<scheme=kivi,key-bits=2,value-bits=2,protect=0,2>");
}

TEST_CASE("the planner offers what the passes run, and asks them rather than copying rules",
          "[plan]") {
  ModelConfig c;
  c.model_type = "mistral";  // mlkv's output is lckv-llama: a sliding window cannot be kept
  c.sliding_window = 4096;
  c.num_key_value_heads = 8;
  c.num_hidden_layers = 6;
  std::vector<std::string> passes;
  std::vector<RefusedStructure> refused;
  for (const auto& s :
       WithHealedStructures(PlanStructures(c, PlanRuntime::kKvfold, &refused), c, &refused)) {
    passes.push_back(PipelineText(s.passes));
    for (const PassSpec& spec : s.passes) CHECK(CreatePass(spec, c)->Unsupported(c).empty());
  }
  CHECK(passes ==
        test::CanonicalPipelines({"", "gqa-svd<kv-heads=4>", "gqa-svd<kv-heads=2>",
                                  "gqa-svd<kv-heads=1>", "gqa-svd<kv-heads=4>,heal",
                                  "gqa-svd<kv-heads=2>,heal", "gqa-svd<kv-heads=1>,heal"}));
  // What was left out is what mlkv itself refuses, in its own words, each with its reason.
  const std::string why = "needs a llama model without sliding window (the output is lckv-llama)";
  CHECK(CreatePass(MakePassSpec("mlkv", {{"kv-layers", "3"}}), c)->Unsupported(c) == why);
  REQUIRE(refused.size() == 3);  // mlkv to 3 and 1 layers, and gqa-svd then mlkv
  for (const RefusedStructure& r : refused) {
    CHECK(r.passes.find("mlkv<") != std::string::npos);
    CHECK(r.reason == "mlkv: " + why);
  }
  // Per-head q/k norms (Qwen3): the exact folds refuse, so the KV-head candidates are the
  // approximate fold's, healed too, each family saying so; sharing across layers stays refused.
  c.model_type = "qwen3";
  c.sliding_window = 0;
  c.qk_norm = true;
  std::vector<std::string> qwen3;
  for (const auto& s : WithHealedStructures(PlanStructures(c, PlanRuntime::kKvfold), c)) {
    qwen3.push_back(PipelineText(s.passes));
    CHECK(s.family.find(s.passes.empty() ? "none" : "approximate heads") != std::string::npos);
  }
  CHECK(qwen3 == test::CanonicalPipelines({"", "gqa-svd<kv-heads=4,qk-norm=approximate>",
                                           "gqa-svd<kv-heads=2,qk-norm=approximate>",
                                           "gqa-svd<kv-heads=1,qk-norm=approximate>",
                                           "gqa-svd<kv-heads=4,qk-norm=approximate>,heal",
                                           "gqa-svd<kv-heads=2,qk-norm=approximate>,heal",
                                           "gqa-svd<kv-heads=1,qk-norm=approximate>,heal"}));
}

TEST_CASE(
    "each plan fits its budget, is the best scored candidate within it, and is what eval measures",
    "[plan][shared]") {
  const PlanJob o = SmallPlan({0.5, 0.25, 0.125});
  const PlanResult r = RunPlan(o);
  REQUIRE(r.plans.size() == 3);
  CHECK(r.layer_kl.size() == 5);  // one sensitivity probe per layer
  CHECK(r.layers_by_sensitivity.size() == 5);
  const Checkpoint source = OpenCheckpoint(o.input.model);
  const auto tokenizer = Tokenizer::Load(source.tokenizer_path);
  // The scoring windows, cut here from the calibration text's tokens after the first 4096.
  const auto tokens =
      LoadCalibrationTokens(o.input.calib_text, *tokenizer, source.config.vocab_size).tokens;
  const auto windows =
      CutWindows(std::vector<std::int32_t>(tokens.begin() + 4096, tokens.end()), 256, 4, "calib");
  const auto base = ReferenceModel::Load(source, {"cpu", 2});
  for (const BudgetPlan& plan : r.plans) {
    INFO("budget " << plan.budget);
    REQUIRE(plan.candidate >= 0);
    const PlanCandidate& chosen = r.candidates[static_cast<std::size_t>(plan.candidate)];
    CHECK(chosen.bytes_fraction <= plan.budget);
    for (const PlanCandidate& k : r.candidates) {
      if (!std::isnan(k.kl) && k.bytes_fraction <= plan.budget) CHECK(chosen.kl <= k.kl);
    }
    // Converted and compared again, outside the planner.
    TempDir tmp;
    std::string dir = o.input.model;
    if (!chosen.passes.empty()) {
      test::RunConvert("stories260K", PipelineText(chosen.passes), tmp.File("out"),
                       o.input.calib_tokens);
      dir = tmp.File("out");
    }
    const Checkpoint ck = OpenCheckpoint(dir);
    EvalOptions eo;
    eo.progress = false;
    eo.scored_from = 128;
    CachePolicySpec cache;
    double bits = 16;
    if (!chosen.kv_cache.empty()) {
      cache = MakeCachePolicy(chosen.kv_cache, ck, 256);
      eo.cache = cache.policy.get();
      bits = cache.policy->AverageBits(256, 128, ck.config.head_dim);
    }
    const double kl = CompareModels(*base, *ReferenceModel::Load(ck, {"cpu", 2}), windows,
                                    tokenizer->bos_id(), eo)
                          .kl;
    // The same conversion and comparison (same threads, same summation order): equal up to
    // rounding; 1e-6 relative leaves room for nothing else.
    CHECK(std::abs(kl - chosen.kl) <= 1e-6 * std::max(1e-3, kl));
    const double heads_and_layers =
        static_cast<double>(ck.config.KvBytesPerToken(2)) / source.config.KvBytesPerToken(2);
    CHECK(std::abs(chosen.bytes_fraction - heads_and_layers * bits / 16) < 1e-12);
  }
  // The budgets are nested, so a larger one never plans a worse KL.
  const auto kl_of = [&](int i) {
    return r.candidates[static_cast<std::size_t>(r.plans[i].candidate)].kl;
  };
  CHECK(kl_of(0) <= kl_of(1));
  CHECK(kl_of(1) <= kl_of(2));
}

TEST_CASE("kvfold plan --json: the documented schema, deterministic, and one-line errors",
          "[plan][cli][shared]") {
  const std::string args =
      "plan " + SharedPath("models/stories260K") + " --calib " + CalibFor("stories260K") +
      " --calib-tokens 4096 --score-windows 4 --screen-windows 1 --survivors 1 --threads 2 --quiet";
  const auto a = test::RunKvfold(args + " --budget 0.5,0.25 --json");
  REQUIRE(a.exit_code == 0);
  auto j = nlohmann::json::parse(a.out);
  REQUIRE(j["plans"].size() == 2);
  for (const auto& p : j["plans"]) {
    CHECK(p["passes"].is_string());
    CHECK((p["kv_cache"].is_string() || p["kv_cache"].is_null()));
    CHECK(p["bytes_fraction"].get<double>() <= p["budget"].get<double>());
    CHECK(p["kl"].get<double>() >= 0);
  }
  CHECK(j["candidates"].size() > 50);
  const auto b = test::RunKvfold(args + " --budget 0.5,0.25 --json");
  auto k = nlohmann::json::parse(b.out);
  for (auto* plan : {&j, &k}) {  // wall times aside
    plan->erase("seconds");
    for (auto& s : (*plan)["structures"]) s.erase("convert_seconds");
  }
  CHECK(j == k);  // same inputs, same plan and scores
  const auto bad = test::RunKvfold(args + " --budget 0.5,0");
  CHECK(bad.exit_code == 2);  // a number the command line refuses, as every such number
  CHECK(bad.err == "kvfold: error: --budget: '0' is not a fraction in (0, 1]\n");
  const auto short_text =
      test::RunKvfold("plan " + SharedPath("models/stories260K") + " --calib " +
                      CalibFor("stories260K") + " --calib-tokens 1000000 --budget 0.5 --quiet");
  CHECK(short_text.exit_code == 1);
  CHECK(short_text.err.find("tokens; the planner calibrates on the first 1000000") !=
        std::string::npos);
  CHECK(short_text.err.rfind("kvfold: error: " + CalibFor("stories260K") + ": ", 0) ==
        0);  // names the file
  const auto limited = test::RunKvfold(args + " --budget 0.5 --plan-seconds 0.001 --json");
  REQUIRE(limited.exit_code == 0);
  CHECK(nlohmann::json::parse(limited.out)["time_limited"] == true);
}

TEST_CASE("convert --kv-budget converts with the plan, records it, and --reproduce reruns it",
          "[plan][cli][shared]") {
  TempDir tmp;
  const std::string common = "convert " + SharedPath("models/stories260K") + " --calib " +
                             CalibFor("stories260K") + " --calib-tokens 4096 --threads 2 --quiet";
  const auto r = test::RunKvfold(common + " --kv-budget 0.25 -o " + tmp.File("out"));
  REQUIRE(r.exit_code == 0);
  const auto meta = test::ReadJson(tmp.File("out/kvfold.json"));
  CHECK(meta["plan"]["budget"] == 0.25);
  CHECK(meta["plan"]["bytes_fraction"].get<double>() <= 0.25);
  CHECK(!meta["plan"]["passes"].get<std::string>().empty());
  const auto again = test::RunKvfold("convert --reproduce " + tmp.File("out/kvfold.json") + " -o " +
                                     tmp.File("again") + " --quiet");
  REQUIRE(again.exit_code == 0);
  for (const char* f : {"kvfold.json", "model.safetensors", "config.json"}) {
    INFO(f);
    CHECK(test::ReadBytes(tmp.File(std::string("again/") + f)) ==
          test::ReadBytes(tmp.File(std::string("out/") + f)));
  }
  // At half the cache the best plan on stories260K changes no weights: nothing to convert.
  const auto none = test::RunKvfold(common + " --kv-budget 0.5 -o " + tmp.File("none"));
  CHECK(none.exit_code == 1);
  CHECK(none.err.find("the best plan changes no weights: serve") != std::string::npos);
  CHECK(test::ListDir(tmp.path()) == std::vector<std::string>{"again", "out"});
  CHECK(test::RunKvfold(common + " --kv-budget 0.25 --passes kv-scales -o " + tmp.File("x"))
            .err.find("--kv-budget: not used with --passes") != std::string::npos);
}

TEST_CASE("kvfold report --budget adds the plan: its table, the Pareto chart and the JSON",
          "[plan][shared]") {
  TempDir tmp;
  Analyze(test::StoriesQuarterBudgetReport(tmp.File("report.html")));
  const auto report = test::ReadJson(tmp.File("report.json"));
  REQUIRE(report["plan"]["plans"].size() == 1);
  CHECK(report["plan"]["plans"][0]["bytes_fraction"].get<double>() <= 0.25);
  const std::string html = test::ReadBytes(tmp.File("report.html"));
  CHECK(html.find("<h2>KV budget plan</h2>") != std::string::npos);
  CHECK(html.find("data-chart=\"plan-pareto\"") != std::string::npos);
  // One dot per screened candidate.
  std::size_t dots = 0;
  for (std::size_t at = html.find("<circle"); at != std::string::npos;
       at = html.find("<circle", at + 1))
    ++dots;
  std::size_t screened = 0;
  for (const auto& c : report["plan"]["candidates"]) screened += c["screen_kl"].is_null() ? 0 : 1;
  CHECK(dots == screened);
}
