#include "calib/hf/tokenizer_json.h"

#include <nlohmann/json.hpp>

#include "formats/error.h"

namespace kvfold::hf {

std::string ComponentType(const nlohmann::json& config, const std::string& where,
                          const std::string& kind) {
  if (!config.is_object() || !config.contains("type") || !config["type"].is_string()) {
    Fail(where, kind + " without a \"type\" string");
  }
  return config["type"].get<std::string>();
}

const nlohmann::json& RequireStep(const nlohmann::json& config, const std::string& where,
                                  const std::string& kind) {
  if (config.is_null()) Fail(where, "a " + kind + " Sequence step is null");
  return config;
}

std::string RequireString(const nlohmann::json& config, const std::string& key,
                          const std::string& where) {
  if (!config.is_object() || !config.contains(key) || !config[key].is_string()) {
    Fail(where, "field \"" + key + "\" must be a string");
  }
  return config[key].get<std::string>();
}

const nlohmann::json& RequireArray(const nlohmann::json& config, const std::string& key,
                                   const std::string& where) {
  if (!config.is_object() || !config.contains(key) || !config[key].is_array()) {
    Fail(where, "field \"" + key + "\" must be an array");
  }
  return config[key];
}

bool OptionalBool(const nlohmann::json& config, const std::string& key, bool fallback,
                  const std::string& where) {
  if (!config.contains(key) || config[key].is_null()) return fallback;
  if (!config[key].is_boolean()) Fail(where, "field \"" + key + "\" must be true or false");
  return config[key].get<bool>();
}

Pattern ReadPattern(const nlohmann::json& config, const std::string& where) {
  if (config.contains("pattern") && config["pattern"].is_object()) {
    const auto& p = config["pattern"];
    if (p.contains("String") && p["String"].is_string())
      return {false, p["String"].get<std::string>()};
    if (p.contains("Regex") && p["Regex"].is_string()) return {true, p["Regex"].get<std::string>()};
  }
  Fail(where, "\"pattern\" must be {\"String\": ...} or {\"Regex\": ...}");
}

namespace {

// Objects with a "type" in `j`, counting stops past `limit` (the JSON nests at most
// kMaxJsonDepth levels: the recursion is bounded).
int CountComponents(const nlohmann::json& j, int limit) {
  int count = j.is_object() && j.contains("type") ? 1 : 0;
  if (!j.is_structured()) return count;
  for (const auto& child : j) {
    if (count > limit) break;
    count += CountComponents(child, limit - count);
  }
  return count;
}

}  // namespace

void CheckComponentCount(const nlohmann::json& config, const std::string& where,
                         const std::string& kind) {
  if (CountComponents(config, kMaxComponents) > kMaxComponents) {
    Fail(where, kind + " with more than " + std::to_string(kMaxComponents) +
                    " components (each one walks the whole text)");
  }
}

void Unsupported(const std::string& where, const std::string& kind, const std::string& what) {
  Fail(where,
       kind + " " + what +
           " is not supported by kvfold's tokenizer.json reader (docs/formats.md lists what is)");
}

}  // namespace kvfold::hf
