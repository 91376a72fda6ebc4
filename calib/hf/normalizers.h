// tokenizer.json "normalizer": NFC, NFKC, Prepend, Replace (string or regex) and Sequence of these,
// applied to each stretch of text between added tokens, as the reference tokenizers do. Any other
// type is refused by name.
//
// A normalizer may not amplify a text without bound: its output is at most
// MaxNormalizedBytes(input) = kNormalizedGrowth x the input + kNormalizedSlack bytes (checked
// after every step of a Sequence, and by Replace before it builds its output), and every step's
// output must be valid UTF-8, which the regexes after it rely on.
#pragma once

#include <cstddef>
#include <memory>
#include <nlohmann/json_fwd.hpp>
#include <string>
#include <string_view>

namespace kvfold::hf {

class MatchBudget;

constexpr std::size_t kNormalizedGrowth = 8;
constexpr std::size_t kNormalizedSlack = 256;
std::size_t MaxNormalizedBytes(std::size_t input_bytes);

class Normalizer {
 public:
  virtual ~Normalizer() = default;
  // `text` normalized; fails naming the file when a step's output would be longer than
  // `max_bytes` or is not valid UTF-8. Regexes draw on `budget`.
  virtual std::string Apply(std::string_view text, std::size_t max_bytes,
                            MatchBudget& budget) const = 0;
};

// Null for a JSON null. `where` names the file for errors.
std::unique_ptr<Normalizer> MakeNormalizer(const nlohmann::json& config, const std::string& where);

// `text` normalized with the bound above.
std::string Normalize(const Normalizer& normalizer, std::string_view text, MatchBudget& budget);

}  // namespace kvfold::hf
