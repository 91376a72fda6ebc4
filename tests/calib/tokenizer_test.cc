#include "calib/tokenizer.h"

#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>

#include "formats/error.h"
#include "formats/mapped_file.h"
#include "tests/test_support.h"

using namespace kvfold;
using kvfold::test::SharedPath;

TEST_CASE("tokenization matches the reference input ids", "[tokenizer][shared]") {
  for (const char* model : {"stories260K", "micro-mha", "mini-mha"}) {
    INFO(model);
    const auto ref = nlohmann::json::parse(
        ReadFileToString(SharedPath(std::string("reference/") + model + "_logits.json")));
    const auto tok =
        Tokenizer::Load(SharedPath(std::string("models/") + model + "/tokenizer.model"));
    std::vector<std::int32_t> expected = ref["input_ids"].get<std::vector<std::int32_t>>();
    REQUIRE(expected.front() == tok->bos_id());
    expected.erase(expected.begin());
    const std::string text = ref["text"].get<std::string>();
    CHECK(tok->Encode(text) == expected);
    CHECK(tok->Decode(expected) == text);
  }
}

TEST_CASE("tokenizer vocabularies match their models", "[tokenizer][shared]") {
  CHECK(Tokenizer::Load(SharedPath("models/stories260K/tokenizer.model"))->vocab_size() == 512);
  const auto tok = Tokenizer::Load(SharedPath("models/mini-mha/tokenizer.model"));
  CHECK(tok->vocab_size() == 2048);
  CHECK(tok->bos_id() == 1);
  CHECK(tok->eos_id() == 2);
}

TEST_CASE("a file that is not a sentencepiece model is a clear error", "[tokenizer]") {
  test::TempDir dir;
  test::WriteBytes(dir.File("tokenizer.model"), "this is not a protobuf");
  CHECK_THROWS_WITH(
      Tokenizer::Load(dir.File("tokenizer.model")),
      Catch::StartsWith(dir.File("tokenizer.model") + ": cannot load sentencepiece model"));
}
