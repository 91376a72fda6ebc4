#include "converter/export/gguf_vocabulary.h"

#include <unistd.h>

#include <functional>
#include <map>
#include <nlohmann/json.hpp>

#include "calib/sentencepiece_tokenizer.h"
#include "calib/tokenizer.h"
#include "formats/error.h"
#include "formats/json_file.h"

namespace kvfold {
namespace {

constexpr std::int32_t kNormal = 1, kUnknown = 2, kControl = 3, kUserDefined = 4, kUnused = 5,
                       kByte = 6;

// llama.cpp's BPE pre-tokenizers, by the split regex of the tokenizer.json they were made for.
struct PreTokenizer {
  const char* name;
  const char* regex;
};
constexpr PreTokenizer kPreTokenizers[] = {
    {"llama-bpe",
     "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| "
     "?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"},
    {"qwen2",
     "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| "
     "?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"},
};

struct Pieces {
  std::vector<std::string> tokens;
  std::vector<float> scores;
  std::vector<std::int32_t> types;
};

Pieces PaddedPieces(std::int64_t vocab_size) {
  Pieces p;
  for (std::int64_t i = 0; i < vocab_size; ++i) {
    p.tokens.push_back("[PAD" + std::to_string(i) + "]");
    p.scores.push_back(-10000.0f);
    p.types.push_back(kUnused);
  }
  return p;
}

void SetPiece(Pieces& p, std::int64_t id, const std::string& text, float score, std::int32_t type,
              const std::string& where) {
  if (id < 0 || id >= static_cast<std::int64_t>(p.tokens.size())) {
    Fail(where, "token " + std::to_string(id) + " lies beyond the model's " +
                    std::to_string(p.tokens.size()) + " embedding rows");
  }
  p.tokens[static_cast<std::size_t>(id)] = text;
  p.scores[static_cast<std::size_t>(id)] = score;
  p.types[static_cast<std::size_t>(id)] = type;
}

GgufVocabulary FromSentencePiece(const SentencePieceTokenizer& spm, std::int64_t vocab_size) {
  Pieces p = PaddedPieces(vocab_size);
  const auto pieces = spm.Pieces();
  for (std::size_t id = 0; id < pieces.size(); ++id) {
    SetPiece(p, static_cast<std::int64_t>(id), pieces[id].text, pieces[id].score, pieces[id].kind,
             spm.path());
  }
  GgufVocabulary v;
  v.model = "llama";
  v.tokens = std::move(p.tokens);
  v.scores = std::move(p.scores);
  v.types = std::move(p.types);
  for (std::size_t id = 0; id < pieces.size(); ++id) {
    if (pieces[id].kind == kUnknown) v.unk = static_cast<std::int64_t>(id);
  }
  v.notes.push_back(
      "llama.cpp's own tokenizer does not apply sentencepiece's normalisation rules (e.g. "
      "nmt_nfkc): text whose normal form differs (non-breaking or repeated spaces, full-width "
      "forms) tokenizes differently there; feed kvfold's ids, or normalise text first "
      "(docs/formats.md)");
  return v;
}

// "a b" for a merge written as a string or as a pair.
std::string MergeText(const nlohmann::json& m, const std::string& where) {
  if (m.is_string()) return m.get<std::string>();
  if (m.is_array() && m.size() == 2 && m[0].is_string() && m[1].is_string())
    return m[0].get<std::string>() + " " + m[1].get<std::string>();
  Fail(where, "a merge is neither \"a b\" nor [\"a\", \"b\"]");
}

// The regex of the first Split in `pre` (a Split or a Sequence of them), "" if none; sets
// `byte_level` when a ByteLevel step splits with GPT-2's own regex.
std::string SplitRegex(const nlohmann::json& pre, bool& gpt2_regex) {
  if (!pre.is_object()) return "";
  const std::string type = pre.value("type", "");
  if (type == "Sequence" && pre.contains("pretokenizers") && pre["pretokenizers"].is_array()) {
    for (const auto& p : pre["pretokenizers"]) {
      const std::string r = SplitRegex(p, gpt2_regex);
      if (!r.empty()) return r;
    }
  }
  if (type == "ByteLevel" && pre.value("use_regex", true)) gpt2_regex = true;
  if (type == "Split" && pre.contains("pattern") && pre["pattern"].is_object() &&
      pre["pattern"].contains("Regex") && pre["pattern"]["Regex"].is_string()) {
    return pre["pattern"]["Regex"].get<std::string>();
  }
  return "";
}

std::string PreTokenizerName(const nlohmann::json& root, const std::string& where) {
  bool gpt2_regex = false;
  const std::string regex = SplitRegex(root.value("pre_tokenizer", nlohmann::json()), gpt2_regex);
  if (regex.empty() && gpt2_regex) return "gpt-2";
  for (const auto& p : kPreTokenizers) {
    if (regex == p.regex) return p.name;
  }
  Fail(where, "its pre-tokenizer splits with a regex llama.cpp has no pre-tokenizer for (" +
                  regex.substr(0, 60) +
                  "...): llama.cpp would tokenize differently; run it with kvfold's ids");
}

// Whether a sentencepiece-style tokenizer.json puts "▁" before the text: a Prepend normalizer
// (Llama 2's), or a Metaspace pre-tokenizer that prepends (prepend_scheme first or always, or
// the older add_prefix_space).
bool PrependsSpace(const nlohmann::json& root) {
  const std::string normalizer = root.value("normalizer", nlohmann::json()).dump();
  if (normalizer.find("\"Prepend\"") != std::string::npos) return true;
  bool prepends = false;
  std::function<void(const nlohmann::json&)> visit = [&](const nlohmann::json& pre) {
    if (!pre.is_object()) return;
    if (pre.value("type", "") == "Sequence" && pre.contains("pretokenizers")) {
      for (const auto& p : pre["pretokenizers"]) visit(p);
    } else if (pre.value("type", "") == "Metaspace") {
      const std::string scheme = pre.value("prepend_scheme", std::string());
      prepends = prepends || scheme == "first" || scheme == "always" ||
                 (scheme.empty() && pre.value("add_prefix_space", true));
    }
  };
  visit(root.value("pre_tokenizer", nlohmann::json()));
  return prepends;
}

bool IsByteLevel(const nlohmann::json& root) {
  const std::string s = root.value("pre_tokenizer", nlohmann::json()).dump() +
                        root.value("decoder", nlohmann::json()).dump();
  return s.find("\"ByteLevel\"") != std::string::npos;
}

// Score of each token of a sentencepiece-style BPE: minus the rank of the first merge making it.
std::map<std::string, float> MergeScores(const nlohmann::json& merges, const std::string& where) {
  std::map<std::string, float> score;
  for (std::size_t rank = 0; rank < merges.size(); ++rank) {
    std::string m = MergeText(merges[rank], where);
    const std::size_t space = m.find(' ');
    if (space == std::string::npos) Fail(where, "a merge has no space: " + m.substr(0, 40));
    m.erase(space, 1);
    score.emplace(m, -static_cast<float>(rank));
  }
  return score;
}

bool IsByteToken(const std::string& t) {
  return t.size() == 6 && t.rfind("<0x", 0) == 0 && t.back() == '>' &&
         std::isxdigit(static_cast<unsigned char>(t[3])) &&
         std::isxdigit(static_cast<unsigned char>(t[4]));
}

nlohmann::json TokenizerConfig(const std::string& json_path) {
  const std::string dir = json_path.substr(0, json_path.find_last_of('/') + 1);
  const std::string path = dir + "tokenizer_config.json";
  if (::access(path.c_str(), F_OK) != 0) return nlohmann::json::object();
  nlohmann::json c = ReadJsonFile(path);
  return c.is_object() ? c : nlohmann::json::object();
}

GgufVocabulary FromTokenizerJson(const Tokenizer& tok, std::int64_t vocab_size) {
  const std::string& where = tok.path();
  const nlohmann::json root = ReadJsonFile(where);
  const nlohmann::json& model = root.at("model");
  if (model.value("type", "") != "BPE")
    Fail(where, "llama.cpp reads BPE tokenizer.json files only");
  const bool byte_level = IsByteLevel(root);
  const nlohmann::json& merges = model.at("merges");
  GgufVocabulary v;
  v.model = byte_level ? "gpt2" : "llama";
  if (byte_level) v.pre = PreTokenizerName(root, where);
  if (!byte_level) v.add_space_prefix = PrependsSpace(root);
  std::map<std::string, float> scores;
  if (!byte_level) {
    if (!model.value("byte_fallback", false))
      Fail(where, "a BPE that is neither byte-level nor sentencepiece-style (byte_fallback)");
    scores = MergeScores(merges, where);
  }
  Pieces p = PaddedPieces(vocab_size);
  for (const auto& [text, id] : model.at("vocab").items()) {
    const auto s = scores.find(text);
    const std::int32_t type = !byte_level && IsByteToken(text) ? kByte : kNormal;
    SetPiece(p, id.get<std::int64_t>(), text, s == scores.end() ? 0.0f : s->second, type, where);
  }
  const std::string unk = model.value("unk_token", nlohmann::json()).is_string()
                              ? model["unk_token"].get<std::string>()
                              : "";
  for (const auto& t : root.value("added_tokens", nlohmann::json::array())) {
    const std::string content = t.at("content").get<std::string>();
    const std::int32_t type = content == unk              ? kUnknown
                              : t.value("special", false) ? kControl
                                                          : kUserDefined;
    const std::int64_t id = t.at("id").get<std::int64_t>();
    if (type == kControl && id >= vocab_size) {  // Gemma 3's image token, beyond the text model
      v.notes.push_back("special token " + content + " (id " + std::to_string(id) +
                        ") lies beyond the model's " + std::to_string(vocab_size) +
                        " rows: left out, as llama.cpp's converter leaves it");
      continue;
    }
    SetPiece(p, id, content, 0.0f, type, where);
  }
  for (std::size_t id = 0; id < p.tokens.size(); ++id) {
    if (!unk.empty() && p.tokens[id] == unk) v.unk = static_cast<std::int64_t>(id);
  }
  if (byte_level) {
    for (const auto& m : merges) v.merges.push_back(MergeText(m, where));
  } else {
    v.scores = std::move(p.scores);
  }
  v.tokens = std::move(p.tokens);
  v.types = std::move(p.types);
  const nlohmann::json config = TokenizerConfig(where);
  if (config.contains("chat_template") && config["chat_template"].is_string())
    v.chat_template = config["chat_template"].get<std::string>();
  const auto pad = config.find("pad_token");
  if (pad != config.end() && pad->is_string()) {
    for (std::size_t id = 0; id < v.tokens.size(); ++id) {
      if (v.tokens[id] == pad->get<std::string>()) v.pad = static_cast<std::int64_t>(id);
    }
  }
  return v;
}

}  // namespace

GgufVocabulary ReadGgufVocabulary(const Tokenizer& tokenizer, std::int64_t vocab_size) {
  GgufVocabulary v;
  if (const auto* spm = dynamic_cast<const SentencePieceTokenizer*>(&tokenizer)) {
    v = FromSentencePiece(*spm, vocab_size);
  } else {
    try {
      v = FromTokenizerJson(tokenizer, vocab_size);
    } catch (const nlohmann::json::exception& e) {
      Fail(tokenizer.path(), std::string("unexpected value (") + e.what() + ")");
    }
  }
  v.bos = tokenizer.bos_id();
  v.eos = tokenizer.eos_id();
  v.add_bos = v.bos != Tokenizer::kNoToken;
  return v;
}

void AddVocabularyMetadata(const GgufVocabulary& v, GgufMetadata& m) {
  m.Set("tokenizer.ggml.model", GgufValue::String(v.model));
  if (!v.pre.empty()) m.Set("tokenizer.ggml.pre", GgufValue::String(v.pre));
  m.Set("tokenizer.ggml.tokens", GgufValue::Strings(v.tokens));
  if (!v.scores.empty()) {
    m.Set("tokenizer.ggml.scores",
          GgufValue::Numbers(GgufValueType::kF32,
                             std::vector<double>(v.scores.begin(), v.scores.end())));
  }
  m.Set(
      "tokenizer.ggml.token_type",
      GgufValue::Numbers(GgufValueType::kI32, std::vector<double>(v.types.begin(), v.types.end())));
  if (!v.merges.empty()) m.Set("tokenizer.ggml.merges", GgufValue::Strings(v.merges));
  if (!v.add_space_prefix) m.Set("tokenizer.ggml.add_space_prefix", GgufValue::Bool(false));
  auto id = [&](const char* key, std::int64_t value) {
    if (value >= 0) m.Set(key, GgufValue::U32(static_cast<std::uint32_t>(value)));
  };
  id("tokenizer.ggml.bos_token_id", v.bos);
  id("tokenizer.ggml.eos_token_id", v.eos);
  id("tokenizer.ggml.unknown_token_id", v.unk);
  id("tokenizer.ggml.padding_token_id", v.pad);
  m.Set("tokenizer.ggml.add_bos_token", GgufValue::Bool(v.add_bos));
  m.Set("tokenizer.ggml.add_eos_token", GgufValue::Bool(false));
  if (!v.chat_template.empty())
    m.Set("tokenizer.chat_template", GgufValue::String(v.chat_template));
}

}  // namespace kvfold
