#include <catch2/catch.hpp>
#include <cmath>
#include <nlohmann/json.hpp>

#include "formats/checkpoint.h"
#include "formats/mapped_file.h"
#include "runtime_check/reference_model.h"
#include "tests/test_support.h"

using namespace kvfold;
using kvfold::test::SharedPath;

// The float64 numpy reference's logits, every position and every vocabulary entry.
TEST_CASE("forward pass reproduces the reference logits to 1e-4", "[runtime][shared]") {
  for (const char* model : {"stories260K", "micro-mha", "mini-mha"}) {
    INFO(model);
    const auto ref = nlohmann::json::parse(
        ReadFileToString(SharedPath(std::string("reference/") + model + "_logits.json")));
    const auto ids = ref["input_ids"].get<std::vector<std::int32_t>>();
    const auto expected = ref["logits"].get<std::vector<std::vector<double>>>();
    const Checkpoint ck = OpenCheckpoint(SharedPath(std::string("models/") + model));
    const auto rt = ReferenceModel::Load(ck, {"cpu", 2});
    const std::vector<float> logits = rt->Logits(ids);
    const std::size_t V = static_cast<std::size_t>(ck.config.vocab_size);
    REQUIRE(logits.size() == ids.size() * V);
    REQUIRE(expected.size() == ids.size());
    double worst = 0;
    for (std::size_t t = 0; t < ids.size(); ++t) {
      REQUIRE(expected[t].size() == V);
      for (std::size_t v = 0; v < V; ++v) {
        worst = std::max(worst, std::abs(logits[t * V + v] - expected[t][v]));
      }
    }
    INFO("max |logit - reference| = " << worst);
    CHECK(worst < 1e-4);
  }
}
