#include <catch2/catch.hpp>

#include "converter/pass.h"
#include "formats/error.h"

using namespace kvfold;

TEST_CASE("pipeline text parses into canonical specs", "[pipeline]") {
  const auto specs = ParsePipeline("gqa-svd< rope=reconstruct , kv-heads=2 >,gqa-meanpool<kv-heads=1>");
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
