#include "converter/model_summary.h"

#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>

#include "tests/test_support.h"

using namespace kvfold;
using kvfold::test::SharedPath;

TEST_CASE("KV bytes per token follow the layout and the stored dtype", "[summary][shared]") {
  // 2 (K and V) x layers x KV heads x head dim x bytes per element.
  const ModelSummary mini = SummarizeCheckpoint(OpenCheckpoint(SharedPath("models/mini-mha")));
  CHECK(mini.kv_bytes_per_token == 2 * 6 * 8 * 32 * 4);
  CHECK(mini.attention == "MHA");
  CHECK(mini.parameters == 4459776);
  const ModelSummary bf16 =
      SummarizeCheckpoint(OpenCheckpoint(SharedPath("models/mini-mha-bf16-sharded")));
  CHECK(bf16.kv_bytes_per_token == 2 * 6 * 8 * 32 * 2);
  CHECK(bf16.files == 2);
  CHECK(bf16.parameters == mini.parameters);
  const ModelSummary gqa = SummarizeCheckpoint(OpenCheckpoint(SharedPath("models/stories260K")));
  CHECK(gqa.kv_bytes_per_token == 2 * 5 * 4 * 8 * 4);
  CHECK(gqa.attention == "GQA");
  const auto j = nlohmann::json::parse(SummaryJson(gqa));
  CHECK(j["kv_cache_bytes_per_token"] == gqa.kv_bytes_per_token);
  CHECK(SummaryText(gqa).find("GQA: 8 query heads, 4 KV heads") != std::string::npos);
}
