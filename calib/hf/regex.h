// A tokenizer.json regex compiled with PCRE2 in UTF + UCP mode (Unicode properties, Unicode \s),
// matched the way JavaScript's String.prototype.matchAll walks a string, which the reference
// tokenizers use: successive non-overlapping matches, an empty match stepping one code point on.
//
// The patterns come from an untrusted file, so matching is bounded (docs/formats.md):
// - work: every match draws steps from a MatchBudget that one Encode shares among all its regexes,
//   kStepsPerByte per byte of the text plus kBaseSteps. A step is one pattern item tried (PCRE2
//   auto-callouts), plus the characters the match moved over since the previous item, plus the
//   minimum count of a counted repeat (x{n}), which PCRE2 scans without a callout;
// - memory: PCRE2's depth limit (kDepthLimit nested backtracking points) and heap limit
//   (kHeapLimitKib of backtracking frames) per match;
// - \C (one byte inside a UTF-8 character) and back references are refused when compiling.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace kvfold::hf {

struct Match {
  std::size_t begin = 0;
  std::size_t end = 0;
};

// The regex work one Encode may do, shared by the normalizer's and pre-tokenizers' regexes.
class MatchBudget {
 public:
  static constexpr std::uint64_t kStepsPerByte = 128;
  static constexpr std::uint64_t kBaseSteps = 1 << 16;

  // A budget for a text of `text_bytes` bytes: kStepsPerByte * text_bytes + kBaseSteps.
  explicit MatchBudget(std::size_t text_bytes);
  std::uint64_t limit() const { return limit_; }
  std::uint64_t used() const { return used_; }
  std::size_t text_bytes() const { return text_bytes_; }
  // Adds `steps`; false once more than the limit is used.
  bool Spend(std::uint64_t steps);

 private:
  std::size_t text_bytes_;
  std::uint64_t limit_;
  std::uint64_t used_ = 0;
};

class Regex {
 public:
  static constexpr std::uint32_t kDepthLimit = 100000;
  static constexpr std::uint32_t kHeapLimitKib = 64 * 1024;

  // `where` names the file for the error a bad pattern (or a match past a limit) raises.
  Regex(const std::string& pattern, const std::string& where);
  ~Regex();
  Regex(const Regex&) = delete;
  Regex& operator=(const Regex&) = delete;

  // Every match in `text` (valid UTF-8), drawing on `budget`; fails naming the file and the limit
  // when a match runs past one.
  std::vector<Match> FindAll(std::string_view text, MatchBudget& budget) const;

  // `pattern` with \s and \S meaning Unicode White_Space, as the JavaScript tokenizers rewrite
  // them (PCRE2 10.42's \s also takes U+180E).
  static std::string WithUnicodeWhitespace(const std::string& pattern);

 private:
  [[noreturn]] void FailMatch(int rc, const MatchBudget& budget) const;

  void* code_ = nullptr;  // pcre2_code_8*
  std::string pattern_;
  std::string where_;
};

// `text` with every occurrence of the literal `from` replaced by `to`.
std::string ReplaceLiteral(std::string_view text, std::string_view from, std::string_view to);

}  // namespace kvfold::hf
