#include "calib/hf/normalizers.h"

#include <utf8proc.h>

#include <cstdlib>
#include <nlohmann/json.hpp>
#include <vector>

#include "calib/hf/regex.h"
#include "calib/hf/tokenizer_json.h"
#include "formats/error.h"

namespace kvfold::hf {
namespace {

class UnicodeForm : public Normalizer {
 public:
  explicit UnicodeForm(utf8proc_option_t options) : options_(options) {}
  std::string Apply(std::string_view text) const override {
    utf8proc_uint8_t* out = nullptr;
    const utf8proc_ssize_t n =
        utf8proc_map(reinterpret_cast<const utf8proc_uint8_t*>(text.data()),
                     static_cast<utf8proc_ssize_t>(text.size()), &out,
                     static_cast<utf8proc_option_t>(options_ | UTF8PROC_STABLE));
    if (n < 0) Fail("utf8proc", std::string("normalization failed: ") + utf8proc_errmsg(n));
    std::string result(reinterpret_cast<const char*>(out), static_cast<std::size_t>(n));
    std::free(out);
    return result;
  }

 private:
  utf8proc_option_t options_;
};

class Prepend : public Normalizer {
 public:
  explicit Prepend(std::string prefix) : prefix_(std::move(prefix)) {}
  std::string Apply(std::string_view text) const override { return prefix_ + std::string(text); }

 private:
  std::string prefix_;
};

class Replace : public Normalizer {
 public:
  Replace(const nlohmann::json& config, const std::string& where)
      : content_(config.value("content", std::string())) {
    const Pattern p = ReadPattern(config, where + " Replace normalizer");
    if (p.is_regex)
      regex_ = std::make_unique<Regex>(Regex::WithUnicodeWhitespace(p.text), where);
    else
      literal_ = p.text;
  }
  std::string Apply(std::string_view text) const override {
    if (!regex_) return ReplaceLiteral(text, literal_, content_);
    std::string out;
    std::size_t at = 0;
    for (const Match& m : regex_->FindAll(text)) {
      out.append(text.substr(at, m.begin - at));
      out.append(content_);
      at = m.end;
    }
    out.append(text.substr(at));
    return out;
  }

 private:
  std::string content_;
  std::string literal_;
  std::unique_ptr<Regex> regex_;
};

class Sequence : public Normalizer {
 public:
  explicit Sequence(std::vector<std::unique_ptr<Normalizer>> steps) : steps_(std::move(steps)) {}
  std::string Apply(std::string_view text) const override {
    std::string s(text);
    for (const auto& step : steps_) s = step->Apply(s);
    return s;
  }

 private:
  std::vector<std::unique_ptr<Normalizer>> steps_;
};

}  // namespace

std::unique_ptr<Normalizer> MakeNormalizer(const nlohmann::json& config, const std::string& where) {
  if (config.is_null()) return nullptr;
  const std::string type = ComponentType(config, where, "normalizer");
  if (type == "NFC") return std::make_unique<UnicodeForm>(UTF8PROC_COMPOSE);
  if (type == "NFKC")
    return std::make_unique<UnicodeForm>(
        static_cast<utf8proc_option_t>(UTF8PROC_COMPOSE | UTF8PROC_COMPAT));
  if (type == "Prepend") return std::make_unique<Prepend>(RequireString(config, "prepend", where));
  if (type == "Replace") return std::make_unique<Replace>(config, where);
  if (type == "Sequence") {
    std::vector<std::unique_ptr<Normalizer>> steps;
    for (const auto& step : RequireArray(config, "normalizers", where))
      steps.push_back(MakeNormalizer(step, where));
    return std::make_unique<Sequence>(std::move(steps));
  }
  Unsupported(where, "normalizer", type);
}

}  // namespace kvfold::hf
