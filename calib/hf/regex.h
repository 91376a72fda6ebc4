// A tokenizer.json regex compiled with PCRE2 in UTF + UCP mode (Unicode properties, Unicode \s),
// matched the way JavaScript's String.prototype.matchAll walks a string, which the reference
// tokenizers use: successive non-overlapping matches, an empty match stepping one code point on.
#pragma once

#include <cstddef>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace kvfold::hf {

struct Match {
  std::size_t begin = 0;
  std::size_t end = 0;
};

class Regex {
 public:
  // `where` names the file and component for the error a bad pattern raises.
  Regex(const std::string& pattern, const std::string& where);
  ~Regex();
  Regex(const Regex&) = delete;
  Regex& operator=(const Regex&) = delete;

  std::vector<Match> FindAll(std::string_view text) const;

  // `pattern` with \s and \S meaning Unicode White_Space, as the JavaScript tokenizers rewrite
  // them (PCRE2 10.42's \s also takes U+180E).
  static std::string WithUnicodeWhitespace(const std::string& pattern);

 private:
  void* code_ = nullptr;  // pcre2_code_8*
  std::string where_;
};

// `text` with every occurrence of the literal `from` replaced by `to`.
std::string ReplaceLiteral(std::string_view text, std::string_view from, std::string_view to);

}  // namespace kvfold::hf
