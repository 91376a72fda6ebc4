#include "calib/hf/regex.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include <algorithm>
#include <limits>
#include <new>

#include "calib/hf/tokenizer_json.h"
#include "calib/hf/utf8.h"
#include "formats/error.h"

namespace kvfold::hf {
namespace {

constexpr std::size_t kShownPatternBytes = 80;

// `pattern` for an error message: its first kShownPatternBytes bytes (whole code points).
std::string Shown(const std::string& pattern) {
  if (pattern.size() <= kShownPatternBytes) return pattern;
  std::size_t end = kShownPatternBytes;
  while (end > 0 && (static_cast<unsigned char>(pattern[end]) & 0xc0) == 0x80) --end;
  return pattern.substr(0, end) + "...";
}

// The minimum count of the counted repeat that ends a pattern item ("x{5}", "\p{L}{2,}",
// "[ab]{3,9}?"), 0 for any other item: PCRE2 scans that many characters with no callout between.
std::uint64_t RepeatMinimum(std::string_view item) {
  while (!item.empty() && (item.back() == '?' || item.back() == '+')) item.remove_suffix(1);
  const std::size_t open = item.rfind('{');
  if (item.empty() || item.back() != '}' || open == std::string_view::npos || open == 0) return 0;
  // \x{41}, \p{L}, \N{U+41}, \g{1}, ...: an escape, not a repeat.
  if (open >= 2 && item[open - 2] == '\\' &&
      std::string_view("xopPNgk").find(item[open - 1]) != std::string_view::npos) {
    return 0;
  }
  std::uint64_t count = 0;
  std::size_t i = open + 1;
  for (; i < item.size() && item[i] >= '0' && item[i] <= '9' && count < 1000000; ++i)
    count = count * 10 + static_cast<std::uint64_t>(item[i] - '0');
  return count;
}

struct CalloutState {
  MatchBudget* budget;
  std::string_view pattern;
  std::size_t last_position;
};

// PCRE2_AUTO_CALLOUT calls this before every pattern item: one step, plus the characters the
// match moved over since the previous item, plus the scan a counted repeat is about to make.
int CountStep(pcre2_callout_block* block, void* data) {
  auto& state = *static_cast<CalloutState*>(data);
  const std::size_t at = block->current_position;
  const std::size_t moved =
      at > state.last_position ? at - state.last_position : state.last_position - at;
  state.last_position = at;
  const std::uint64_t scan =
      RepeatMinimum(state.pattern.substr(block->pattern_position, block->next_item_length));
  return state.budget->Spend(1 + moved + scan) ? 0 : PCRE2_ERROR_CALLOUT;
}

using MatchContext = std::unique_ptr<pcre2_match_context, decltype(&pcre2_match_context_free)>;

MatchContext LimitedContext(CalloutState& state) {
  MatchContext context(pcre2_match_context_create(nullptr), &pcre2_match_context_free);
  if (!context) throw std::bad_alloc();
  pcre2_set_callout(context.get(), &CountStep, &state);
  const std::uint64_t steps =
      std::min<std::uint64_t>(state.budget->limit(), std::numeric_limits<std::uint32_t>::max());
  pcre2_set_match_limit(context.get(), static_cast<std::uint32_t>(steps));
  pcre2_set_depth_limit(context.get(), Regex::kDepthLimit);
  pcre2_set_heap_limit(context.get(), Regex::kHeapLimitKib);
  return context;
}

}  // namespace

MatchBudget::MatchBudget(std::size_t text_bytes)
    : text_bytes_(text_bytes), limit_(kStepsPerByte * text_bytes + kBaseSteps) {}

bool MatchBudget::Spend(std::uint64_t steps) {
  used_ += steps;
  return used_ <= limit_;
}

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

Regex::Regex(const std::string& pattern, const std::string& where)
    : pattern_(pattern), where_(where) {
  int error = 0;
  PCRE2_SIZE offset = 0;
  auto* code = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(pattern.data()), pattern.size(),
                             PCRE2_UTF | PCRE2_UCP | PCRE2_AUTO_CALLOUT | PCRE2_NEVER_BACKSLASH_C,
                             &error, &offset, nullptr);
  if (code == nullptr) {
    PCRE2_UCHAR message[256];
    pcre2_get_error_message(error, message, sizeof message);
    Fail(where, "regex " + Shown(pattern) + " does not compile at offset " +
                    std::to_string(offset) + ": " + reinterpret_cast<const char*>(message));
  }
  std::uint32_t back_references = 0;
  pcre2_pattern_info(code, PCRE2_INFO_BACKREFMAX, &back_references);
  if (back_references > 0) {
    pcre2_code_free(code);
    Unsupported(where, "regex " + Shown(pattern), "with a back reference");
  }
  code_ = code;
}

Regex::~Regex() { pcre2_code_free(static_cast<pcre2_code*>(code_)); }

std::vector<Match> Regex::FindAll(std::string_view text, MatchBudget& budget) const {
  auto* code = static_cast<pcre2_code*>(code_);
  const std::unique_ptr<pcre2_match_data, decltype(&pcre2_match_data_free)> data(
      pcre2_match_data_create_from_pattern(code, nullptr), &pcre2_match_data_free);
  CalloutState state{&budget, pattern_, 0};
  const MatchContext context = LimitedContext(state);
  std::vector<Match> matches;
  std::size_t start = 0;
  while (start <= text.size()) {
    // The text is valid UTF-8 (checked on load and after every normalizer step): skip PCRE2's
    // check at every step.
    const int rc = pcre2_match(code, reinterpret_cast<PCRE2_SPTR>(text.data()), text.size(), start,
                               PCRE2_NO_UTF_CHECK, data.get(), context.get());
    if (rc == PCRE2_ERROR_NOMATCH) break;
    if (rc < 0) FailMatch(rc, budget);
    const PCRE2_SIZE* ovector = pcre2_get_ovector_pointer(data.get());
    matches.push_back({ovector[0], ovector[1]});
    start = ovector[1] > ovector[0]    ? ovector[1]
            : ovector[1] < text.size() ? ovector[1] + CodePointLength(text, ovector[1])
                                       : text.size() + 1;
  }
  return matches;
}

void Regex::FailMatch(int rc, const MatchBudget& budget) const {
  const std::string regex = "regex " + Shown(pattern_);
  if (rc == PCRE2_ERROR_CALLOUT || rc == PCRE2_ERROR_MATCHLIMIT) {
    Fail(where_, regex + " hit the match-step limit (" + std::to_string(budget.used()) +
                     " steps for a " + std::to_string(budget.text_bytes()) +
                     "-byte text; the limit is " + std::to_string(MatchBudget::kStepsPerByte) +
                     " per byte + " + std::to_string(MatchBudget::kBaseSteps) + ")");
  }
  if (rc == PCRE2_ERROR_DEPTHLIMIT) {
    Fail(where_, regex + " hit PCRE2's depth limit (" + std::to_string(kDepthLimit) +
                     " nested backtracking points)");
  }
  if (rc == PCRE2_ERROR_HEAPLIMIT) {
    Fail(where_, regex + " hit PCRE2's heap limit (" + std::to_string(kHeapLimitKib) +
                     " KiB of backtracking memory)");
  }
  PCRE2_UCHAR message[256];
  pcre2_get_error_message(rc, message, sizeof message);
  Fail(where_, regex + " failed to match (PCRE2 error " + std::to_string(rc) + ": " +
                   reinterpret_cast<const char*>(message) + ")");
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
