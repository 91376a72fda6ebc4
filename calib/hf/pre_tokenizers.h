// tokenizer.json "pre_tokenizer": Split (regex or string, Isolated or Removed, invert),
// ByteLevel (GPT-2's byte-to-character alphabet, optional prefix space and regex), Metaspace
// (split: false, a one-character replacement) and Sequence of these. Any other type or setting is
// refused by name. A Sequence may grow its input at most as a normalizer may
// (MaxNormalizedBytes, checked after every step): stacked ByteLevel steps would double it each.
#pragma once

#include <array>
#include <memory>
#include <nlohmann/json_fwd.hpp>
#include <string>
#include <string_view>
#include <vector>

namespace kvfold::hf {

class MatchBudget;

class PreTokenizer {
 public:
  virtual ~PreTokenizer() = default;
  // Splits `text`, the `section_index`-th stretch between added tokens (Metaspace's "first"
  // scheme prepends only to section 0), into the words the model encodes one by one. Regexes
  // draw on `budget`.
  virtual std::vector<std::string> Apply(std::string_view text, int section_index,
                                         MatchBudget& budget) const = 0;
};

std::unique_ptr<PreTokenizer> MakePreTokenizer(const nlohmann::json& config,
                                               const std::string& where);

// GPT-2's printable stand-in for each byte (ByteLevel), as UTF-8.
const std::array<std::string, 256>& ByteLevelAlphabet();

}  // namespace kvfold::hf
