#include "calib/hf_tokenizer.h"

#include <unistd.h>

#include <algorithm>
#include <nlohmann/json.hpp>

#include "calib/hf/added_tokens.h"
#include "calib/hf/bpe_model.h"
#include "calib/hf/decoders.h"
#include "calib/hf/normalizers.h"
#include "calib/hf/pre_tokenizers.h"
#include "calib/hf/regex.h"
#include "calib/hf/tokenizer_json.h"
#include "calib/seam_encode.h"
#include "calib/text.h"
#include "formats/error.h"
#include "formats/json_file.h"

namespace kvfold {
namespace {

std::vector<hf::AddedToken> ReadAddedTokens(const nlohmann::json& root, const std::string& where) {
  std::vector<hf::AddedToken> tokens;
  if (!root.contains("added_tokens") || root["added_tokens"].is_null()) return tokens;
  for (const auto& t : hf::RequireArray(root, "added_tokens", where)) {
    hf::AddedToken a;
    a.content = hf::RequireString(t, "content", where + " added_tokens");
    if (!t.contains("id") || !t["id"].is_number_integer() || t["id"].get<std::int64_t>() < 0 ||
        t["id"].get<std::int64_t>() >= (1 << 30)) {
      Fail(where, "added token " + a.content + " has no valid id");
    }
    a.id = t["id"].get<std::int32_t>();
    if (hf::OptionalBool(t, "single_word", false, where))
      hf::Unsupported(where, "added token " + a.content, "with single_word: true");
    a.lstrip = hf::OptionalBool(t, "lstrip", false, where);
    a.rstrip = hf::OptionalBool(t, "rstrip", false, where);
    a.normalized = hf::OptionalBool(t, "normalized", false, where);
    a.special = hf::OptionalBool(t, "special", false, where);
    tokens.push_back(a);
  }
  return tokens;
}

void CheckAddedTokenLength(const std::string& content, const std::string& where) {
  if (content.size() <= hf::kMaxAddedTokenBytes) return;
  Fail(where, "added token " + content.substr(0, 32) + "... is " + std::to_string(content.size()) +
                  " bytes long; kvfold reads added tokens of up to " +
                  std::to_string(hf::kMaxAddedTokenBytes) +
                  " bytes (matching one walks its length at every position of a text)");
}

// A token named in tokenizer_config.json: a string or an AddedToken object {"content": ...}.
std::string ConfigToken(const nlohmann::json& config, const char* key) {
  if (!config.contains(key)) return "";
  const auto& v = config[key];
  if (v.is_string()) return v.get<std::string>();
  if (v.is_object() && v.contains("content") && v["content"].is_string())
    return v["content"].get<std::string>();
  return "";
}

// The special token a TemplateProcessing "single" template puts before the text, if any.
std::string TemplateBos(const nlohmann::json& processor, const std::string& where) {
  if (processor.is_null()) return "";
  const std::string type = hf::ComponentType(processor, where, "post_processor");
  if (type == "Sequence") {
    for (const auto& p : hf::RequireArray(processor, "processors", where)) {
      const std::string bos = TemplateBos(p, where);
      if (!bos.empty()) return bos;
    }
    return "";
  }
  if (type == "ByteLevel") return "";
  if (type != "TemplateProcessing") hf::Unsupported(where, "post_processor", type);
  for (const auto& piece : hf::RequireArray(processor, "single", where)) {
    if (piece.contains("Sequence")) return "";
    if (piece.contains("SpecialToken"))
      return hf::RequireString(piece["SpecialToken"], "id", where + " post_processor");
  }
  return "";
}

}  // namespace

HfTokenizer::HfTokenizer(std::string path) : Tokenizer(std::move(path)) {}
HfTokenizer::~HfTokenizer() = default;

std::unique_ptr<Tokenizer> HfTokenizer::Load(const std::string& json_path) {
  try {
    return LoadComponents(json_path);
  } catch (const nlohmann::json::exception& e) {  // a field of the wrong JSON type anywhere
    Fail(json_path, std::string("unexpected value (") + e.what() + ")");
  }
}

namespace {

// The BPE vocabulary's size, or one past its highest added token that is not special.
int ModelVocabSize(int model_tokens, const std::vector<hf::AddedToken>& added) {
  int size = model_tokens;
  for (const hf::AddedToken& t : added) {
    if (!t.special) size = std::max(size, t.id + 1);
  }
  return size;
}

}  // namespace

std::unique_ptr<Tokenizer> HfTokenizer::LoadComponents(const std::string& json_path) {
  const nlohmann::json root = ReadJsonFile(json_path);
  if (!root.is_object()) Fail(json_path, "not a tokenizer.json (expected a JSON object)");
  const std::string dir = json_path.substr(0, json_path.find_last_of('/') + 1);
  const std::string config_path = dir + "tokenizer_config.json";
  const nlohmann::json config = ::access(config_path.c_str(), F_OK) == 0 ? ReadJsonFile(config_path)
                                                                         : nlohmann::json::object();

  std::unique_ptr<HfTokenizer> tok(new HfTokenizer(json_path));
  if (!root.contains("model")) Fail(json_path, "no \"model\"");
  std::vector<hf::AddedToken> added = ReadAddedTokens(root, json_path);
  tok->model_ = std::make_unique<hf::BpeModel>(root["model"], json_path, added.size());
  for (const char* kind : {"normalizer", "pre_tokenizer", "decoder", "post_processor"}) {
    if (root.contains(kind)) hf::CheckComponentCount(root[kind], json_path, kind);
  }
  tok->normalizer_ = hf::MakeNormalizer(root.value("normalizer", nlohmann::json()), json_path);
  tok->pre_tokenizer_ =
      hf::MakePreTokenizer(root.value("pre_tokenizer", nlohmann::json()), json_path);
  try {
    tok->decoder_ = hf::MakeDecoder(root.value("decoder", nlohmann::json()), json_path);
  } catch (const Error& e) {
    tok->decoder_error_ = e.what();
  }
  tok->model_vocab_size_ = ModelVocabSize(tok->model_->vocab_size(), added);
  std::vector<hf::AddedToken> raw, normalized;
  for (hf::AddedToken& t : added) {
    tok->model_->AddToken(t.content, t.id);
    tok->longest_added_token_ = std::max(tok->longest_added_token_, t.content.size());
    if (t.normalized && tok->normalizer_) {
      hf::MatchBudget budget(t.content.size());
      t.content = hf::Normalize(*tok->normalizer_, t.content, budget);
      CheckAddedTokenLength(t.content, json_path);
      tok->longest_added_token_ = std::max(tok->longest_added_token_, t.content.size());
      normalized.push_back(t);
    } else {
      CheckAddedTokenLength(t.content, json_path);
      raw.push_back(t);
    }
  }
  tok->unnormalized_ = std::make_unique<hf::AddedTokenSplitter>(std::move(raw));
  tok->normalized_ = std::make_unique<hf::AddedTokenSplitter>(std::move(normalized));

  // BOS: the template's leading special token; without a template, the config's bos_token when
  // it asks for one (add_bos_token). EOS: the config's eos_token.
  std::string bos = TemplateBos(root.value("post_processor", nlohmann::json()), json_path);
  if (bos.empty() && hf::OptionalBool(config, "add_bos_token", false, config_path))
    bos = ConfigToken(config, "bos_token");
  const std::string eos = ConfigToken(config, "eos_token");
  for (const auto& [name, id] : {std::pair{bos, &tok->bos_id_}, std::pair{eos, &tok->eos_id_}}) {
    if (name.empty()) continue;
    *id = tok->model_->Find(name);
    if (*id < 0) Fail(json_path, "special token " + name + " is not in the vocabulary");
  }
  return tok;
}

struct HfTokenizer::EncodeState {
  hf::MatchBudget budget;
  hf::WordCache words;
};

void HfTokenizer::EncodeStretch(const std::string& text, int section_index, EncodeState& state,
                                std::vector<std::int32_t>& out) const {
  const std::string normalized =
      normalizer_ ? hf::Normalize(*normalizer_, text, state.budget) : text;
  for (const hf::Section& s : normalized_->Split(normalized)) {
    if (s.text.empty()) continue;
    if (s.token >= 0) {
      out.push_back(normalized_->token(s.token).id);
      continue;
    }
    if (!pre_tokenizer_) {
      model_->Encode(s.text, out, state.words);
      continue;
    }
    for (const std::string& word : pre_tokenizer_->Apply(s.text, section_index, state.budget))
      model_->Encode(word, out, state.words);
  }
}

std::vector<std::int32_t> HfTokenizer::Encode(std::string_view text) const {
  // The regexes run without PCRE2's UTF-8 check.
  if (const auto bad = FindInvalidUtf8(text))
    Fail(path(),
         "cannot encode a text that is not valid UTF-8 (byte " + std::to_string(*bad) + ")");
  EncodeState state{hf::MatchBudget(text.size()), {}};  // the regex work of the whole Encode
  std::vector<std::int32_t> ids;
  const std::vector<hf::Section> sections = unnormalized_->Split(text);
  for (std::size_t i = 0; i < sections.size(); ++i) {
    const hf::Section& s = sections[i];
    if (s.token >= 0)
      ids.push_back(unnormalized_->token(s.token).id);
    else if (!s.text.empty())
      EncodeStretch(s.text, static_cast<int>(i), state, ids);
  }
  return ids;
}

std::set<std::pair<char, char>> HfTokenizer::CrossingSeams() const {
  std::vector<std::string_view> tokens;
  tokens.reserve(static_cast<std::size_t>(model_->vocab_size()));
  for (int id = 0; id < model_->vocab_size(); ++id) tokens.push_back(model_->Token(id));
  return kvfold::CrossingSeams(tokens);
}

std::vector<std::int32_t> HfTokenizer::EncodePrefix(std::string_view text, std::size_t min_ids,
                                                    int threads) const {
  // An added token beside a seam is seen whole. Encode reads the tokenizer only; each call has
  // its own regex budget, match data and word cache.
  return EncodeInPieces(
      text, min_ids, threads, SeamOptions().context + longest_added_token_,
      [this] { return CrossingSeams(); }, [this](std::string_view s) { return Encode(s); });
}

std::string HfTokenizer::Decode(const std::vector<std::int32_t>& ids) const {
  if (!decoder_error_.empty()) throw Error(decoder_error_);
  std::vector<std::string> tokens;
  for (std::int32_t id : ids) {
    const std::string& t = model_->Token(id);
    if (t.empty()) Fail(path(), "cannot decode id " + std::to_string(id) + ": no such token");
    tokens.push_back(t);
  }
  if (decoder_) tokens = decoder_->Apply(std::move(tokens));
  std::string text;
  for (const auto& t : tokens) text += t;
  return text;
}

int HfTokenizer::vocab_size() const { return model_->vocab_size(); }

}  // namespace kvfold
