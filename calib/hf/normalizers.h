// tokenizer.json "normalizer": NFC, NFKC, Prepend, Replace (string or regex) and Sequence of these,
// applied to each stretch of text between added tokens, as the reference tokenizers do. Any other
// type is refused by name.
#pragma once

#include <memory>
#include <nlohmann/json_fwd.hpp>
#include <string>
#include <string_view>

namespace kvfold::hf {

class Normalizer {
 public:
  virtual ~Normalizer() = default;
  virtual std::string Apply(std::string_view text) const = 0;
};

// Null for a JSON null. `where` names the file for errors.
std::unique_ptr<Normalizer> MakeNormalizer(const nlohmann::json& config, const std::string& where);

}  // namespace kvfold::hf
