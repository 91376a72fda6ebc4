// Reading tokenizer.json components: the field accessors every component uses, each failing with
// one line that names the file, the component and the field.
#pragma once

#include <nlohmann/json_fwd.hpp>
#include <string>

namespace kvfold::hf {

// config["type"], required to be a string; `kind` is "normalizer", "pre_tokenizer", ...
std::string ComponentType(const nlohmann::json& config, const std::string& where,
                          const std::string& kind);
// A step of a `kind` Sequence: `config` itself, which must not be null.
const nlohmann::json& RequireStep(const nlohmann::json& config, const std::string& where,
                                  const std::string& kind);
std::string RequireString(const nlohmann::json& config, const std::string& key,
                          const std::string& where);
const nlohmann::json& RequireArray(const nlohmann::json& config, const std::string& key,
                                   const std::string& where);
// config[key] when it is a bool, `fallback` when absent or null.
bool OptionalBool(const nlohmann::json& config, const std::string& key, bool fallback,
                  const std::string& where);

// A "pattern": {"String": "..."} or {"Regex": "..."}.
struct Pattern {
  bool is_regex = false;
  std::string text;
};
Pattern ReadPattern(const nlohmann::json& config, const std::string& where);

// The most components (objects with a "type", Sequences included) one normalizer, pre_tokenizer
// or decoder may hold: each walks the whole text. Real files have a handful.
constexpr int kMaxComponents = 256;
// Fails naming the file when `config` holds more than kMaxComponents; `kind` names the part.
void CheckComponentCount(const nlohmann::json& config, const std::string& where,
                         const std::string& kind);

// The error for a component kvfold does not implement, named so the user knows what to ask for.
[[noreturn]] void Unsupported(const std::string& where, const std::string& kind,
                              const std::string& what);

}  // namespace kvfold::hf
