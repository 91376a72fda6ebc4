#include "calib/hf/pre_tokenizers.h"

#include <algorithm>
#include <cctype>
#include <nlohmann/json.hpp>

#include "calib/hf/normalizers.h"
#include "calib/hf/regex.h"
#include "calib/hf/tokenizer_json.h"
#include "calib/hf/utf8.h"
#include "formats/error.h"

namespace kvfold::hf {
namespace {

// Pieces of `text` as JavaScript's split-keeping-delimiters walk makes them: the text between
// matches and every non-empty match, in order (an empty match still ends the piece before it).
std::vector<std::string> SplitIsolated(const Regex& regex, std::string_view text,
                                       MatchBudget& budget) {
  std::vector<std::string> pieces;
  std::size_t previous = 0;
  for (const Match& m : regex.FindAll(text, budget)) {
    if (previous < m.begin) pieces.emplace_back(text.substr(previous, m.begin - previous));
    if (m.end > m.begin) pieces.emplace_back(text.substr(m.begin, m.end - m.begin));
    previous = m.end;
  }
  if (previous < text.size()) pieces.emplace_back(text.substr(previous));
  return pieces;
}

// MergedWithPrevious: each match ends the piece before it ("a b" split on " " is "a ", "b"), as
// Gemma's tokenizer.json splits after spaces.
std::vector<std::string> SplitMergedWithPrevious(const Regex& regex, std::string_view text,
                                                 MatchBudget& budget) {
  std::vector<std::string> pieces;
  std::size_t previous = 0;
  for (const Match& m : regex.FindAll(text, budget)) {
    if (m.end > previous) pieces.emplace_back(text.substr(previous, m.end - previous));
    previous = std::max(previous, m.end);
  }
  if (previous < text.size()) pieces.emplace_back(text.substr(previous));
  return pieces;
}

std::string EscapeLiteral(const std::string& literal) {
  std::string out;
  for (char c : literal) {
    const bool plain =
        static_cast<unsigned char>(c) >= 0x80 || std::isalnum(static_cast<unsigned char>(c));
    if (!plain) out += '\\';
    out += c;
  }
  return out;
}

class Split : public PreTokenizer {
 public:
  Split(const nlohmann::json& config, const std::string& where) {
    const std::string behavior = config.value("behavior", std::string("Isolated"));
    if (behavior != "Isolated" && behavior != "MergedWithPrevious")
      Unsupported(where, "Split pre_tokenizer behavior", behavior);
    merge_with_previous_ = behavior == "MergedWithPrevious";
    if (OptionalBool(config, "invert", false, where))
      Unsupported(where, "Split pre_tokenizer", "with invert: true");
    const Pattern p = ReadPattern(config, where + " Split pre_tokenizer");
    regex_ = std::make_unique<Regex>(
        p.is_regex ? Regex::WithUnicodeWhitespace(p.text) : EscapeLiteral(p.text), where);
  }
  std::vector<std::string> Apply(std::string_view text, int, MatchBudget& budget) const override {
    return merge_with_previous_ ? SplitMergedWithPrevious(*regex_, text, budget)
                                : SplitIsolated(*regex_, text, budget);
  }

 private:
  std::unique_ptr<Regex> regex_;
  bool merge_with_previous_ = false;
};

// GPT-2's word regex, with JavaScript's \s written out (the reference tokenizers run it as a JS
// regex: U+FEFF is space there, U+0085 is not).
constexpr const char* kJsSpace =
    "\\t\\n\\x0B\\f\\r "
    "\\x{a0}\\x{1680}\\x{2000}-\\x{200a}\\x{2028}\\x{2029}\\x{202f}\\x{205f}\\x{3000}\\x{feff}";

std::string Gpt2Pattern() {
  const std::string s = kJsSpace;
  return "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^" + s + "\\p{L}\\p{N}]+|[" + s +
         "]+(?![^" + s + "])|[" + s + "]+";
}

class ByteLevel : public PreTokenizer {
 public:
  ByteLevel(const nlohmann::json& config, const std::string& where)
      : add_prefix_space_(OptionalBool(config, "add_prefix_space", false, where)) {
    if (OptionalBool(config, "use_regex", true, where))
      regex_ = std::make_unique<Regex>(Gpt2Pattern(), where);
  }
  std::vector<std::string> Apply(std::string_view text, int, MatchBudget& budget) const override {
    std::string s(text);
    if (add_prefix_space_ && (s.empty() || s[0] != ' ')) s.insert(0, " ");
    std::vector<std::string> words = regex_ ? SplitMatches(s, budget) : std::vector<std::string>{s};
    const auto& alphabet = ByteLevelAlphabet();
    for (auto& w : words) {
      std::string mapped;
      for (unsigned char c : w) mapped += alphabet[c];
      w = std::move(mapped);
    }
    return words;
  }

 private:
  // The matches alone (JavaScript's String.prototype.match with a global regex).
  std::vector<std::string> SplitMatches(const std::string& s, MatchBudget& budget) const {
    std::vector<std::string> out;
    for (const Match& m : regex_->FindAll(s, budget)) {
      if (m.end > m.begin) out.push_back(s.substr(m.begin, m.end - m.begin));
    }
    return out;
  }
  bool add_prefix_space_;
  std::unique_ptr<Regex> regex_;
};

class Metaspace : public PreTokenizer {
 public:
  Metaspace(const nlohmann::json& config, const std::string& where)
      : replacement_(config.value("replacement", std::string("\u2581"))) {
    if (OptionalBool(config, "split", false, where))
      Unsupported(where, "Metaspace pre_tokenizer", "with split: true");
    if (replacement_.empty() || CodePointLength(replacement_, 0) != replacement_.size())
      Fail(where, "Metaspace pre_tokenizer replacement must be one character");
    if (config.contains("prepend_scheme") && config["prepend_scheme"].is_string()) {
      scheme_ = config["prepend_scheme"].get<std::string>();
    } else {
      // Older files: add_prefix_space chose between always and never.
      scheme_ = OptionalBool(config, "add_prefix_space", true, where) ? "always" : "never";
    }
    if (scheme_ != "always" && scheme_ != "first" && scheme_ != "never") {
      Unsupported(where, "Metaspace prepend_scheme", scheme_);
    }
  }
  std::vector<std::string> Apply(std::string_view text, int section_index,
                                 MatchBudget&) const override {
    std::string s = ReplaceLiteral(text, " ", replacement_);
    const bool prepend = scheme_ == "always" || (scheme_ == "first" && section_index == 0);
    if (prepend && s.compare(0, replacement_.size(), replacement_) != 0) s.insert(0, replacement_);
    return {s};
  }

 private:
  std::string replacement_;
  std::string scheme_;
};

class Sequence : public PreTokenizer {
 public:
  Sequence(std::vector<std::unique_ptr<PreTokenizer>> steps, std::string where)
      : steps_(std::move(steps)), where_(std::move(where)) {}
  std::vector<std::string> Apply(std::string_view text, int section_index,
                                 MatchBudget& budget) const override {
    const std::size_t max_bytes = MaxNormalizedBytes(text.size());
    std::vector<std::string> words{std::string(text)};
    for (const auto& step : steps_) {
      std::vector<std::string> next;
      std::size_t bytes = 0;
      for (const auto& w : words) {
        for (auto& piece : step->Apply(w, section_index, budget)) {
          bytes += piece.size();
          next.push_back(std::move(piece));
        }
        if (bytes > max_bytes) FailTooLong(max_bytes);
      }
      words = std::move(next);
    }
    return words;
  }

 private:
  [[noreturn]] void FailTooLong(std::size_t max_bytes) const {
    Fail(where_, "pre_tokenizer Sequence would make the text longer than " +
                     std::to_string(max_bytes) + " bytes (at most " +
                     std::to_string(kNormalizedGrowth) + " times its input + " +
                     std::to_string(kNormalizedSlack) + " bytes)");
  }

  std::vector<std::unique_ptr<PreTokenizer>> steps_;
  std::string where_;
};

}  // namespace

std::unique_ptr<PreTokenizer> MakePreTokenizer(const nlohmann::json& config,
                                               const std::string& where) {
  if (config.is_null()) return nullptr;
  const std::string type = ComponentType(config, where, "pre_tokenizer");
  if (type == "Split") return std::make_unique<Split>(config, where);
  if (type == "ByteLevel") return std::make_unique<ByteLevel>(config, where);
  if (type == "Metaspace") return std::make_unique<Metaspace>(config, where);
  if (type == "Sequence") {
    std::vector<std::unique_ptr<PreTokenizer>> steps;
    for (const auto& step : RequireArray(config, "pretokenizers", where))
      steps.push_back(MakePreTokenizer(RequireStep(step, where, "pre_tokenizer"), where));
    return std::make_unique<Sequence>(std::move(steps), where);
  }
  Unsupported(where, "pre_tokenizer", type);
}

const std::array<std::string, 256>& ByteLevelAlphabet() {
  static const std::array<std::string, 256> alphabet = [] {
    std::array<std::string, 256> a;
    char32_t next = 256;  // bytes without a printable self get 256, 257, ... in byte order
    for (int b = 0; b < 256; ++b) {
      const bool printable =
          (b >= '!' && b <= '~') || (b >= 0xa1 && b <= 0xac) || (b >= 0xae && b <= 0xff);
      a[b] = EncodeUtf8(printable ? static_cast<char32_t>(b) : next++);
    }
    return a;
  }();
  return alphabet;
}

}  // namespace kvfold::hf
