// The tokenizer.json reader on hand-written files (merge order, added tokens, refusals) and on the
// real files tests/js installs (BOS/EOS, decoding). Token-exactness against the JavaScript
// tokenizers on whole texts is the tokenizer_js test (scripts/check_tokenizers_js.sh).
#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>

#include "calib/tokenizer.h"
#include "formats/error.h"
#include "tests/calib/real_tokenizer.h"
#include "tests/test_support.h"

using namespace kvfold;
using kvfold::test::RealTokenizer;

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

// Hostile tokenizer.json files: each stops at a limit with one line naming the file, in bounded
// time and memory (docs/formats.md, "tokenizer.json").
namespace {

nlohmann::json WithSplit(const std::string& regex) {
  nlohmann::json t = ToyTokenizer({"a b"});
  t["pre_tokenizer"] = {{"type", "Split"},
                        {"pattern", {{"Regex", regex}}},
                        {"behavior", "Isolated"},
                        {"invert", false}};
  return t;
}

nlohmann::json Repeated(const std::string& type, const char* key, const nlohmann::json& step,
                        int times) {
  nlohmann::json steps = nlohmann::json::array();
  for (int i = 0; i < times; ++i) steps.push_back(step);
  return {{"type", type}, {key, steps}};
}

// `depth` Sequence normalizers, one inside the other, around an NFC.
std::string NestedNormalizer(int depth) {
  std::string nested;
  for (int i = 0; i < depth; ++i) nested += R"({"type": "Sequence", "normalizers": [)";
  nested += R"({"type": "NFC"})";
  for (int i = 0; i < depth; ++i) nested += "]}";
  std::string json = ToyTokenizer({"a b"}).dump();
  const std::string null_normalizer = "\"normalizer\":null";
  return json.replace(json.find(null_normalizer), null_normalizer.size(),
                      "\"normalizer\":" + nested);
}

}  // namespace

TEST_CASE("a split regex stops at its match-step, depth or heap limit", "[tokenizer][hf][limits]") {
  test::TempDir dir;
  const std::string file = dir.File("tokenizer.json");
  // ~10^6 steps at every position, under PCRE2's own per-position limit: 17 s for 2000 bytes.
  CHECK_THROWS_WITH(
      LoadJson(dir, WithSplit("(?:\\p{L}|\\p{Ll}){0,16}\\d"))->Encode(std::string(2000, 'a')),
      file +
          ": regex (?:\\p{L}|\\p{Ll}){0,16}\\d hit the match-step limit (321537 steps for a "
          "2000-byte text; the limit is 128 per byte + 65536)");
  // A 30000-character scan at every position, with no callout inside it: quadratic.
  CHECK_THROWS_WITH(
      LoadJson(dir, WithSplit("(?:\\p{L}{30000}|x)"))->Encode(std::string(40000, 'a')),
      Catch::StartsWith(file + ": regex (?:\\p{L}{30000}|x) hit the match-step limit ("));
  // Recursion nests one backtracking frame per character; 1000 capture groups make each 16 KB.
  std::string groups;
  for (int i = 0; i < 1000; ++i) groups += "()";
  CHECK_THROWS_WITH(LoadJson(dir, WithSplit("(a(?1)?)" + groups))->Encode(std::string(10000, 'a')),
                    Catch::EndsWith(" hit PCRE2's heap limit (65536 KiB of backtracking memory)"));
  CHECK_THROWS_WITH(
      LoadJson(dir, WithSplit("(a(?1)?)"))->Encode(std::string(120000, 'a')),
      file + ": regex (a(?1)?) hit PCRE2's depth limit (100000 nested backtracking points)");
  // Back references have no linear bound: refused when loading.
  CHECK_THROWS_WITH(LoadJson(dir, WithSplit("(a)\\1")),
                    Catch::StartsWith(file + ": regex (a)\\1 with a back reference is not "));
  // Real patterns take about 5 steps per byte (tokenizer_js runs them on whole texts).
  CHECK(LoadJson(dir, WithSplit("\\p{L}+|\\s+(?!\\S)|\\s+"))->Encode(std::string(100000, 'a')) ==
        std::vector<std::int32_t>(100000, 1));
}

TEST_CASE("a normalizer or pre-tokenizer that amplifies the text fails before it allocates",
          "[tokenizer][hf][limits]") {
  test::TempDir dir;
  const std::string file = dir.File("tokenizer.json");
  const std::string too_long =
      file +
      ": Replace normalizer would make the text longer than 8256 bytes (a normalized text "
      "may be at most 8 times its original length + 256 bytes)";
  nlohmann::json t = ToyTokenizer({"a b"});
  // Each step triples the text (3^40), or doubles its e's (2^50).
  t["normalizer"] =
      Repeated("Sequence", "normalizers",
               {{"type", "Replace"}, {"pattern", {{"Regex", ""}}}, {"content", "ab"}}, 40);
  CHECK_THROWS_WITH(LoadJson(dir, t)->Encode(std::string(1000, 'a')), too_long);
  t["normalizer"] =
      Repeated("Sequence", "normalizers",
               {{"type", "Replace"}, {"pattern", {{"String", "e"}}}, {"content", "ee"}}, 50);
  CHECK_THROWS_WITH(LoadJson(dir, t)->Encode(std::string(1000, 'e')), too_long);
  // Stacked ByteLevel steps double every byte above 0x7f.
  t = ToyTokenizer({"a b"});
  t["pre_tokenizer"] =
      Repeated("Sequence", "pretokenizers", {{"type", "ByteLevel"}, {"use_regex", false}}, 40);
  CHECK_THROWS_WITH(LoadJson(dir, t)->Encode(std::string(500, 'a') + "\u00e9"),
                    Catch::StartsWith(file + ": pre_tokenizer Sequence would make the text longer "
                                             "than 4272 bytes"));
  t["pre_tokenizer"] = {{"type", "Metaspace"}, {"replacement", std::string(10000, '_')}};
  CHECK_THROWS_WITH(LoadJson(dir, t),
                    file + ": Metaspace pre_tokenizer replacement must be one character");
  // Real chains stay inside the bound: Llama 2's Prepend + Replace triples a text of spaces.
  const auto llama2 = Tokenizer::Load(RealTokenizer("tokenizer-llama2"));
  CHECK_FALSE(llama2->Encode(std::string(100000, ' ')).empty());
}

TEST_CASE("token ids are bounded by the number of entries", "[tokenizer][hf][limits]") {
  test::TempDir dir;
  const std::string file = dir.File("tokenizer.json");
  const std::string bound =
      ", but ids must stay below 1042 (twice the vocab and added tokens + 1024: a larger id "
      "would leave a gap of unused ids)";
  nlohmann::json t = ToyTokenizer({"a b"});
  t["model"]["vocab"]["z"] = (1 << 30) - 1;  // a table of 2^30 tokens before
  CHECK_THROWS_WITH(LoadJson(dir, t), file + ": token z has id 1073741823" + bound);
  t = ToyTokenizer({"a b"});
  t["added_tokens"] = {{{"id", 1 << 28}, {"content", "<x>"}, {"special", true}}};
  CHECK_THROWS_WITH(LoadJson(dir, t), file + ": token <x> has id 268435456" + bound);
  // Gaps up to the bound are fine.
  t["added_tokens"] = {{{"id", 1041}, {"content", "<x>"}, {"special", true}}};
  CHECK(LoadJson(dir, t)->Encode("a<x>") == std::vector<std::int32_t>{1, 1041});
}

TEST_CASE("an added token longer than 256 bytes is refused", "[tokenizer][hf][limits]") {
  test::TempDir dir;
  const std::string file = dir.File("tokenizer.json");
  // Each position of a text of a's walked the whole token: 200000 x 100000 steps.
  nlohmann::json t = ToyTokenizer({"a b"});
  t["added_tokens"] = {{{"id", 8}, {"content", std::string(100000, 'a') + "b"}, {"special", true}}};
  CHECK_THROWS_WITH(LoadJson(dir, t), file + ": added token " + std::string(32, 'a') +
                                          "... is 100001 bytes long; kvfold reads added tokens of "
                                          "up to 256 bytes (matching one walks its length at "
                                          "every position of a text)");
  t["added_tokens"][0]["content"] = std::string(255, 'a') + "b";
  CHECK(LoadJson(dir, t)->Encode(std::string(255, 'a') + "b") == std::vector<std::int32_t>{8});
}

TEST_CASE("components nested 100000 deep, or 10000 of them, are refused",
          "[tokenizer][hf][limits]") {
  test::TempDir dir;
  const std::string file = dir.File("tokenizer.json");
  // A stack overflow (SIGSEGV) before: copying, building and freeing the tree recurse.
  test::WriteBytes(file, NestedNormalizer(100000));
  CHECK_THROWS_WITH(Tokenizer::Load(file),
                    Catch::StartsWith(file + ": JSON nested deeper than 512 levels (at byte "));
  test::WriteBytes(file, NestedNormalizer(200));  // 401 levels
  CHECK(Tokenizer::Load(file)->Encode("ba") == std::vector<std::int32_t>{2, 1});
  // Each component walks the whole text: 10000 NFC steps would take minutes on a long one.
  nlohmann::json many = ToyTokenizer({"a b"});
  many["normalizer"] = Repeated("Sequence", "normalizers", {{"type", "NFC"}}, 10000);
  CHECK_THROWS_WITH(LoadJson(dir, many),
                    file +
                        ": normalizer with more than 256 components (each one walks the whole "
                        "text)");
  // A null step of a Sequence was a null pointer.
  nlohmann::json t = ToyTokenizer({"a b"});
  t["normalizer"] = {{"type", "Sequence"}, {"normalizers", {nullptr}}};
  CHECK_THROWS_WITH(LoadJson(dir, t), file + ": a normalizer Sequence step is null");
}

TEST_CASE("\\C is refused, and only valid UTF-8 reaches the regexes", "[tokenizer][hf][limits]") {
  test::TempDir dir;
  const std::string file = dir.File("tokenizer.json");
  // \C matches one byte of a UTF-8 character: the normalized text would be invalid UTF-8, which
  // PCRE2 reads past the end of (its UTF-8 check is skipped).
  nlohmann::json t = ToyTokenizer({"a b"});
  t["normalizer"] = {{"type", "Replace"}, {"pattern", {{"Regex", "\\C"}}}, {"content", ""}};
  CHECK_THROWS_WITH(LoadJson(dir, t), file +
                                          ": regex \\C does not compile at offset 2: using \\C is "
                                          "disabled by the application");
  CHECK_THROWS_WITH(LoadJson(dir, WithSplit("\\p{L}+"))->Encode("ab\xc3"),
                    file + ": cannot encode a text that is not valid UTF-8 (byte 2)");
}
