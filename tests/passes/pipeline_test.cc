#include <catch2/catch.hpp>
#include <map>
#include <set>

#include "converter/passes/pass.h"
#include "formats/error.h"

using namespace kvfold;

TEST_CASE("pipeline text parses into canonical specs", "[pipeline]") {
  const auto specs =
      ParsePipeline("gqa-svd< rope=reconstruct , kv-heads=2 >,gqa-meanpool<kv-heads=1>");
  REQUIRE(specs.size() == 2);
  CHECK(specs[0].name == "gqa-svd");
  CHECK(specs[0].Int("kv-heads") == 2);
  CHECK(specs[0].written == std::set<std::string>{"kv-heads", "rope"});
  // Every parameter in force, defaults from the schema included; none that does not apply
  // (kv-head-total goes with kv-heads=auto).
  CHECK(specs[0].Text() ==
        "gqa-svd<kv-heads=2,qk-norm=exact,refit=o,ridge=auto,rope=reconstruct,value-weight=none,"
        "weight=query>");
  CHECK(specs[1].Text() == "gqa-meanpool<kv-heads=1>");
  CHECK(PipelineText(ParsePipeline(PipelineText(specs))) == PipelineText(specs));
}

TEST_CASE("the parameter schema checks types, conditions and requirements", "[pipeline]") {
  // Types: integers, numbers, choices, lists, sets.
  CHECK_THROWS_WITH(MakePassSpec("mlkv", {{"kv-layers", "two"}}),
                    "--passes: mlkv: kv-layers=two is not an integer");
  CHECK_THROWS_WITH(MakePassSpec("kv-balance", {{"alpha", "half"}}),
                    "--passes: kv-balance: alpha=half is not a number");
  CHECK_THROWS_WITH(MakePassSpec("lckv", {{"init", "zero"}}),
                    "--passes: lckv: init=zero is not one of calib|mean");
  CHECK_THROWS_WITH(MakePassSpec("gqa-svd", {{"kv-heads", "4,x"}}),
                    "--passes: gqa-svd: kv-heads=x is not an integer");
  CHECK(MakePassSpec("gqa-svd", {{"kv-heads", " 4, 2 "}}).Get("kv-heads") == "4,2");
  CHECK(MakePassSpec("gqa-svd", {{"kv-heads", "auto"}, {"kv-head-total", "8"}})
            .Int("kv-head-total") == 8);
  CHECK(MakePassSpec("kv-mixed", {{"protect", "3,1"}}).IntList("protect") ==
        std::vector<std::int64_t>{3, 1});
  CHECK(MakePassSpec("kv-mixed").IntList("protect").empty());
  // Required parameters, with the help text naming what they are.
  CHECK_THROWS_WITH(MakePassSpec("mlkv"), Catch::Contains("mlkv: kv-layers is required"));
  CHECK_THROWS_WITH(MakePassSpec("gqa-svd", {{"kv-heads", "auto"}}),
                    Catch::Contains("gqa-svd: kv-head-total is required"));
  // Conditions: a parameter that does not apply is refused, its default not in force.
  CHECK_THROWS_WITH(MakePassSpec("gqa-svd", {{"kv-heads", "2"}, {"kv-head-total", "8"}}),
                    "--passes: gqa-svd: kv-head-total applies only with kv-heads=auto");
  CHECK_FALSE(MakePassSpec("gqa-svd", {{"kv-heads", "2"}, {"refit", "none"}}).Has("ridge"));
  // Defaults taken from another parameter.
  const PassSpec mixed = MakePassSpec("kv-mixed", {{"bits", "3"}, {"value-bits", "2"}});
  CHECK(mixed.Int("key-bits") == 3);
  CHECK(mixed.Int("value-bits") == 2);
  // --print-passes is the schema: type, choices, default or requirement, condition.
  const std::string listing = PrintPasses();
  CHECK(listing.find("ridge (number | auto; default auto, only with refit=o)") !=
        std::string::npos);
  CHECK(listing.find("kv-layers (integer; required)") != std::string::npos);
  CHECK(listing.find("key-bits (integer; default: as bits)") != std::string::npos);
  CHECK(listing.find("rope (commute | reconstruct; default commute)") != std::string::npos);
  // Every registered parameter's default is a valid value of its own type.
  for (const PassInfo& info : PassRegistry()) {
    for (const PassParam& p : info.params) {
      if (p.default_value == nullptr) continue;
      INFO(info.name << " " << p.name);
      std::map<std::string, std::string> required;
      if (std::string(info.name).rfind("gqa-", 0) == 0) required["kv-heads"] = "1";
      if (std::string(info.name) == "mlkv") required["kv-layers"] = "1";
      if (p.when != nullptr) {
        const std::string w = p.when;
        required[w.substr(0, w.find('='))] = w.substr(w.find('=') + 1);
      }
      if (required.count("kv-heads") && required["kv-heads"] == "auto")
        required["kv-head-total"] = "4";
      required[p.name] = p.default_value;
      CHECK(MakePassSpec(info.name, required).Get(p.name) == p.default_value);
    }
  }
}

TEST_CASE("pipeline errors name what is wrong", "[pipeline]") {
  CHECK_THROWS_WITH(ParsePipeline("gqa-svdd<kv-heads=2>"),
                    "--passes: unknown pass 'gqa-svdd' (see --print-passes)");
  CHECK_THROWS_WITH(ParsePipeline("gqa-svd<kv-head=2>"),
                    "--passes: gqa-svd: unknown parameter 'kv-head' (see --print-passes)");
  CHECK_THROWS_WITH(ParsePipeline("gqa-svd<kv-heads=2"), Catch::Contains("never closed"));
  CHECK_THROWS_WITH(ParsePipeline(""), Catch::Contains("no passes"));
  CHECK_THROWS_WITH(ParsePipeline("gqa-svd<kv-heads>"), Catch::Contains("needs a value"));
  CHECK_THROWS_WITH(ParsePipeline("gqa-svd<kv-heads=2,>"), Catch::Contains("empty parameter"));
  CHECK_THROWS_WITH(ParsePipeline("gqa-svd<,>"), Catch::Contains("empty parameter"));
  CHECK_THROWS_WITH(ParsePipeline("kv-mixed<protect=0,,1>"), Catch::Contains("empty parameter"));
  CHECK_THROWS_WITH(ParsePipeline("gqa-svd<kv-heads=2,kv-heads=2>"),
                    Catch::Contains("given twice"));
  ModelConfig c;
  c.num_key_value_heads = 8;
  for (const auto& info : PassRegistry()) {
    if (std::string(info.name) != "gqa-svd") continue;
    CHECK_THROWS_WITH(info.create(ParsePipeline("gqa-svd<kv-heads=3>")[0], c),
                      Catch::Contains("does not divide the model's 8 KV heads"));
    CHECK_THROWS_WITH(info.create(ParsePipeline("gqa-svd<kv-heads=2,rope=sideways>")[0], c),
                      Catch::Contains("rope=sideways is not one of commute|reconstruct"));
    CHECK_THROWS_WITH(info.create(ParsePipeline("gqa-svd<kv-heads=x2>")[0], c),
                      Catch::Contains("is not an integer"));
  }
  CHECK(PrintPasses().find("gqa-meanpool") != std::string::npos);
}

TEST_CASE("heal checks its settings and refuses the layers it cannot model", "[pipeline][heal]") {
  ModelConfig c;
  c.num_attention_heads = 8;
  c.num_key_value_heads = 8;
  // Made and asked, as a pipeline does (the settings at creation, the model by Unsupported).
  auto create = [&](const std::string& text) {
    const PassSpec spec = ParsePipeline(text)[0];
    auto pass = CreatePass(spec, c);
    RequireSupported(*pass, spec.name, c);
    return pass;
  };
  const auto heal = create("heal");
  REQUIRE(heal->LayerLocal());
  const HealSettings* s = static_cast<LayerPass&>(*heal).Heals();
  REQUIRE(s != nullptr);
  CHECK(s->windows == 256);
  CHECK(s->steps == 400);
  CHECK(s->lr == 0.05);
  CHECK(heal->ChangesKv());  // so that kv-scales after it measures the healed layer
  CHECK_THROWS_WITH(create("heal<windows=1>"), Catch::Contains("windows must be at least 2"));
  CHECK_THROWS_WITH(create("heal<lr=0>"), Catch::Contains("lr must be in (0, 1]"));
  CHECK_THROWS_WITH(create("heal<steps=0>"), Catch::Contains("must be at least 1"));
  CHECK_THROWS_WITH(create("heal<seed=-1>"), Catch::Contains("seed must not be negative"));
  CHECK(heal->Unsupported(c).empty());
  c.qk_norm = true;  // Qwen3's and Gemma 3's q/k norms are in heal's attention
  CHECK(heal->Unsupported(c).empty());
  c.norm_offset = true;
  c.sandwich_norms = true;  // Gemma: the layer target works, the trajectory one does not
  CHECK(create("heal")->Unsupported(c).empty());
  CHECK_THROWS_WITH(create("heal<target=trajectory>"),
                    Catch::Contains("--passes: heal: target=trajectory: Gemma's residual"));
  c.sandwich_norms = false;
  c.norm_offset = false;
  c.qk_norm = false;
  // target=logits holds the layers and LM head in float32: 22 layers of width 2048 (4.5 GiB) are
  // refused, 2 of them with a 512-token vocabulary are not.
  c.hidden_size = 2048;
  c.head_dim = 256;
  c.intermediate_size = 5632;
  c.vocab_size = 32000;
  c.num_hidden_layers = 22;
  CHECK_THROWS_WITH(create("heal<target=logits>"),
                    Catch::Contains("target=logits holds the source's layers and LM head in "
                                    "float32, at most 1 GiB of them; this model's take 4562 MiB"));
  c.num_hidden_layers = 2;
  c.vocab_size = 512;
  CHECK(create("heal<target=logits>")->Unsupported(c).empty());
  c.kv_layer_of = {0, 0};  // mlkv: layer 1 reads layer 0's K/V
  CHECK(heal->Unsupported(c).empty());
  c.kv_layer_of = {1, 1};  // lckv: layer 0 reads layer 1's
  CHECK(heal->Unsupported(c).empty());
}

TEST_CASE("passes read the checked values; created specs round-trip", "[pipeline]") {
  ModelConfig c;
  c.num_hidden_layers = 4;
  c.num_attention_heads = 8;
  c.num_key_value_heads = 8;
  c.head_dim = 32;
  auto created = [&](const std::string& text) {
    const PassSpec spec = ParsePipeline(text)[0];
    for (const auto& info : PassRegistry()) {
      if (spec.name == info.name) info.create(spec, c);
    }
    return spec.Text();
  };
  CHECK(created("gqa-svd<kv-heads=2>") ==
        "gqa-svd<kv-heads=2,qk-norm=exact,refit=o,ridge=auto,rope=commute,value-weight=none,weight="
        "query>");
  // The ridge belongs to the refit: recorded with refit=o, refused without it.
  CHECK(created("gqa-svd<kv-heads=2,refit=none>") ==
        "gqa-svd<kv-heads=2,qk-norm=exact,refit=none,rope=commute,value-weight=none,weight=query>");
  CHECK(created(created("gqa-svd<kv-heads=2,ridge=0.01>")) ==
        created("gqa-svd<kv-heads=2,refit=o,ridge=0.01>"));
  CHECK_THROWS_WITH(created("gqa-svd<kv-heads=2,refit=none,ridge=0>"),
                    Catch::Contains("ridge applies only with refit=o"));
  CHECK_THROWS_WITH(created("gqa-svd<kv-heads=2,refit=o,ridge=-1>"),
                    Catch::Contains("ridge must be auto or a number >= 0"));
  CHECK(created("kv-balance") == "kv-balance<alpha=0.5>");
  CHECK(created("kv-mixed<bits=2>") ==
        "kv-mixed<bits=2,group=0,hi-bits=16,keep=0.2,key-axis=channel,key-bits=2,"
        "protect=none,recent=0.5,value-axis=token,value-bits=2>");
  // The full text parses back to the same pass.
  CHECK(created(created("kv-mixed<bits=2,protect=1,3>")) ==
        created("kv-mixed<bits=2,protect=1,3>"));
  // Lists: no duplicates, only layers that exist.
  CHECK_THROWS_WITH(created("kv-mixed<protect=0,0>"), Catch::Contains("lists 0 twice"));
  CHECK_THROWS_WITH(created("kv-mixed<protect=-1>"),
                    Catch::Contains("protect layer -1 does not exist"));
  CHECK_THROWS_WITH(created("kv-mixed<protect=4>"),
                    Catch::Contains("protect layer 4 does not exist"));
  CHECK_THROWS_WITH(created("kv-mixed<key-bits=4294967298>"),
                    Catch::Contains("bits must be in [1, 8]"));
}
