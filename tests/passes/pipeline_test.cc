#include <catch2/catch.hpp>

#include "converter/passes/pass.h"
#include "formats/error.h"

using namespace kvfold;

TEST_CASE("pipeline text parses into canonical specs", "[pipeline]") {
  const auto specs =
      ParsePipeline("gqa-svd< rope=reconstruct , kv-heads=2 >,gqa-meanpool<kv-heads=1>");
  REQUIRE(specs.size() == 2);
  CHECK(specs[0].name == "gqa-svd");
  CHECK(specs[0].params.at("kv-heads") == "2");
  CHECK(specs[0].Text() == "gqa-svd<kv-heads=2,rope=reconstruct>");
  CHECK(specs[1].Text() == "gqa-meanpool<kv-heads=1>");
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

TEST_CASE("a created pass's spec names every parameter in force, defaults included", "[pipeline]") {
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
        "gqa-svd<kv-heads=2,refit=o,ridge=auto,rope=commute,value-weight=none,weight=query>");
  // The ridge belongs to the refit: recorded with refit=o, refused without it.
  CHECK(created("gqa-svd<kv-heads=2,refit=none>") ==
        "gqa-svd<kv-heads=2,refit=none,rope=commute,value-weight=none,weight=query>");
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
