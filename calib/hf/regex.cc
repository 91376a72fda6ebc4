#include "calib/hf/regex.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include "calib/hf/utf8.h"
#include "formats/error.h"

namespace kvfold::hf {

std::string Regex::WithUnicodeWhitespace(const std::string& pattern) {
  std::string out;
  for (std::size_t i = 0; i < pattern.size(); ++i) {
    if (pattern[i] == '\\' && i + 1 < pattern.size()) {
      const char next = pattern[++i];
      if (next == 's')
        out += "\\p{White_Space}";
      else if (next == 'S')
        out += "\\P{White_Space}";
      else
        out += std::string{'\\', next};
      continue;
    }
    out += pattern[i];
  }
  return out;
}

Regex::Regex(const std::string& pattern, const std::string& where) : where_(where) {
  int error = 0;
  PCRE2_SIZE offset = 0;
  code_ = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(pattern.data()), pattern.size(),
                        PCRE2_UTF | PCRE2_UCP, &error, &offset, nullptr);
  if (code_ == nullptr) {
    PCRE2_UCHAR message[256];
    pcre2_get_error_message(error, message, sizeof message);
    Fail(where, "regex " + pattern + " does not compile at offset " + std::to_string(offset) +
                    ": " + reinterpret_cast<const char*>(message));
  }
}

Regex::~Regex() { pcre2_code_free(static_cast<pcre2_code*>(code_)); }

std::vector<Match> Regex::FindAll(std::string_view text) const {
  auto* code = static_cast<pcre2_code*>(code_);
  std::unique_ptr<pcre2_match_data, decltype(&pcre2_match_data_free)> data(
      pcre2_match_data_create_from_pattern(code, nullptr), &pcre2_match_data_free);
  std::vector<Match> matches;
  std::size_t start = 0;
  while (start <= text.size()) {
    // The text was validated as UTF-8 once, on load: skip PCRE2's check at every step.
    const int rc = pcre2_match(code, reinterpret_cast<PCRE2_SPTR>(text.data()), text.size(), start,
                               PCRE2_NO_UTF_CHECK, data.get(), nullptr);
    if (rc == PCRE2_ERROR_NOMATCH) break;
    if (rc < 0) Fail(where_, "regex match failed (PCRE2 error " + std::to_string(rc) + ")");
    const PCRE2_SIZE* ovector = pcre2_get_ovector_pointer(data.get());
    matches.push_back({ovector[0], ovector[1]});
    start = ovector[1] > ovector[0]    ? ovector[1]
            : ovector[1] < text.size() ? ovector[1] + CodePointLength(text, ovector[1])
                                       : text.size() + 1;
  }
  return matches;
}

std::string ReplaceLiteral(std::string_view text, std::string_view from, std::string_view to) {
  if (from.empty()) return std::string(text);
  std::string out;
  std::size_t i = 0;
  for (std::size_t hit; (hit = text.find(from, i)) != std::string_view::npos;
       i = hit + from.size()) {
    out.append(text.substr(i, hit - i));
    out.append(to);
  }
  out.append(text.substr(i));
  return out;
}

}  // namespace kvfold::hf
