#include "calib/hf/normalizers.h"

#include <utf8proc.h>

#include <cstdlib>
#include <nlohmann/json.hpp>
#include <vector>

#include "calib/hf/regex.h"
#include "calib/hf/tokenizer_json.h"
#include "calib/text.h"
#include "formats/error.h"

namespace kvfold::hf {
namespace {

[[noreturn]] void FailTooLong(const std::string& where, const char* step, std::size_t max_bytes) {
  Fail(where, std::string(step) + " normalizer would make the text longer than " +
                  std::to_string(max_bytes) + " bytes (a normalized text may be at most " +
                  std::to_string(kNormalizedGrowth) + " times its original length + " +
                  std::to_string(kNormalizedSlack) + " bytes)");
}

// `out`, once checked against the bound and as UTF-8.
std::string Checked(std::string out, std::size_t max_bytes, const std::string& where,
                    const char* step) {
  if (out.size() > max_bytes) FailTooLong(where, step, max_bytes);
  if (const auto bad = FindInvalidUtf8(out)) {
    Fail(where, std::string(step) + " normalizer made invalid UTF-8 (byte " + std::to_string(*bad) +
                    " of its output)");
  }
  return out;
}

// Non-overlapping occurrences of `literal`, left to right (none for an empty literal).
std::vector<Match> FindLiteral(std::string_view text, std::string_view literal) {
  std::vector<Match> hits;
  if (literal.empty()) return hits;
  for (std::size_t at = text.find(literal); at != std::string_view::npos;
       at = text.find(literal, at + literal.size())) {
    hits.push_back({at, at + literal.size()});
  }
  return hits;
}

class UnicodeForm : public Normalizer {
 public:
  UnicodeForm(const char* name, utf8proc_option_t options, std::string where)
      : name_(name), options_(options), where_(std::move(where)) {}
  std::string Apply(std::string_view text, std::size_t max_bytes, MatchBudget&) const override {
    utf8proc_uint8_t* out = nullptr;
    const utf8proc_ssize_t n =
        utf8proc_map(reinterpret_cast<const utf8proc_uint8_t*>(text.data()),
                     static_cast<utf8proc_ssize_t>(text.size()), &out,
                     static_cast<utf8proc_option_t>(options_ | UTF8PROC_STABLE));
    if (n < 0) Fail(where_, std::string("normalization failed: ") + utf8proc_errmsg(n));
    std::string result(reinterpret_cast<const char*>(out), static_cast<std::size_t>(n));
    std::free(out);
    return Checked(std::move(result), max_bytes, where_, name_);
  }

 private:
  const char* name_;
  utf8proc_option_t options_;
  std::string where_;
};

class Prepend : public Normalizer {
 public:
  Prepend(std::string prefix, std::string where)
      : prefix_(std::move(prefix)), where_(std::move(where)) {}
  std::string Apply(std::string_view text, std::size_t max_bytes, MatchBudget&) const override {
    if (prefix_.size() + text.size() > max_bytes) FailTooLong(where_, "Prepend", max_bytes);
    return Checked(prefix_ + std::string(text), max_bytes, where_, "Prepend");
  }

 private:
  std::string prefix_;
  std::string where_;
};

class Replace : public Normalizer {
 public:
  Replace(const nlohmann::json& config, const std::string& where)
      : content_(config.value("content", std::string())), where_(where) {
    const Pattern p = ReadPattern(config, where + " Replace normalizer");
    if (p.is_regex)
      regex_ = std::make_unique<Regex>(Regex::WithUnicodeWhitespace(p.text), where);
    else
      literal_ = p.text;
  }
  // The output's size is known from the matches: an amplifying replacement fails before it is
  // built.
  std::string Apply(std::string_view text, std::size_t max_bytes,
                    MatchBudget& budget) const override {
    const std::vector<Match> hits =
        regex_ ? regex_->FindAll(text, budget) : FindLiteral(text, literal_);
    std::size_t kept = text.size();
    for (const Match& m : hits) kept -= m.end - m.begin;
    if (kept > max_bytes ||
        (!content_.empty() && hits.size() > (max_bytes - kept) / content_.size())) {
      FailTooLong(where_, "Replace", max_bytes);
    }
    std::string out;
    out.reserve(kept + hits.size() * content_.size());
    std::size_t at = 0;
    for (const Match& m : hits) {
      out.append(text.substr(at, m.begin - at));
      out.append(content_);
      at = m.end;
    }
    out.append(text.substr(at));
    return Checked(std::move(out), max_bytes, where_, "Replace");
  }

 private:
  std::string content_;
  std::string where_;
  std::string literal_;
  std::unique_ptr<Regex> regex_;
};

class Sequence : public Normalizer {
 public:
  explicit Sequence(std::vector<std::unique_ptr<Normalizer>> steps) : steps_(std::move(steps)) {}
  std::string Apply(std::string_view text, std::size_t max_bytes,
                    MatchBudget& budget) const override {
    std::string s(text);
    for (const auto& step : steps_) s = step->Apply(s, max_bytes, budget);
    return s;
  }

 private:
  std::vector<std::unique_ptr<Normalizer>> steps_;
};

}  // namespace

std::size_t MaxNormalizedBytes(std::size_t input_bytes) {
  return kNormalizedGrowth * input_bytes + kNormalizedSlack;
}

std::unique_ptr<Normalizer> MakeNormalizer(const nlohmann::json& config, const std::string& where) {
  if (config.is_null()) return nullptr;
  const std::string type = ComponentType(config, where, "normalizer");
  if (type == "NFC") return std::make_unique<UnicodeForm>("NFC", UTF8PROC_COMPOSE, where);
  if (type == "NFKC")
    return std::make_unique<UnicodeForm>(
        "NFKC", static_cast<utf8proc_option_t>(UTF8PROC_COMPOSE | UTF8PROC_COMPAT), where);
  if (type == "Prepend")
    return std::make_unique<Prepend>(RequireString(config, "prepend", where), where);
  if (type == "Replace") return std::make_unique<Replace>(config, where);
  if (type == "Sequence") {
    std::vector<std::unique_ptr<Normalizer>> steps;
    for (const auto& step : RequireArray(config, "normalizers", where))
      steps.push_back(MakeNormalizer(RequireStep(step, where, "normalizer"), where));
    return std::make_unique<Sequence>(std::move(steps));
  }
  Unsupported(where, "normalizer", type);
}

std::string Normalize(const Normalizer& normalizer, std::string_view text, MatchBudget& budget) {
  return normalizer.Apply(text, MaxNormalizedBytes(text.size()), budget);
}

}  // namespace kvfold::hf
