// FieldReader: typed, named reads of config.json fields, each failure one line naming the file
// and the field. Shared by the generic config parser and each architecture's (architectures.cc).
#pragma once

#include <cmath>
#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>

#include "formats/error.h"

namespace kvfold {

class FieldReader {
 public:
  using json = nlohmann::json;

  FieldReader(const json& doc, const std::string& file) : doc_(doc), file_(file) {}

  bool Has(const char* key) const { return doc_.contains(key) && !doc_[key].is_null(); }
  // The key is written, null included (Gemma 2: a null soft-cap turns it off, an absent one
  // takes the default).
  bool Written(const char* key) const { return doc_.contains(key); }
  const json& doc() const { return doc_; }
  const std::string& file() const { return file_; }

  std::int64_t PositiveInt(const char* key) const {
    if (!Has(key)) Fail(file_, std::string("missing required field '") + key + "'");
    return PositiveIntValue(key);
  }
  std::int64_t PositiveInt(const char* key, std::int64_t fallback) const {
    return Has(key) ? PositiveIntValue(key) : fallback;
  }
  std::int64_t Int(const char* key, std::int64_t fallback) const {
    if (!Has(key)) return fallback;
    const json& v = doc_[key];
    if (!v.is_number_integer()) Fail(file_, std::string("field '") + key + "' must be an integer");
    return v.get<std::int64_t>();
  }
  double PositiveNumber(const char* key, double fallback) const {
    if (!Has(key)) return fallback;
    const json& v = doc_[key];
    if (!v.is_number() || !(v.get<double>() > 0) || !std::isnormal(v.get<double>())) {
      Fail(file_, std::string("field '") + key + "' must be a positive number (" + v.dump() +
                      " is not a normal float64)");
    }
    return v.get<double>();
  }
  bool Bool(const char* key, bool fallback) const {
    if (!Has(key)) return fallback;
    const json& v = doc_[key];
    if (!v.is_boolean()) Fail(file_, std::string("field '") + key + "' must be true or false");
    return v.get<bool>();
  }
  std::string String(const char* key, const std::string& fallback) const {
    if (!Has(key)) return fallback;
    const json& v = doc_[key];
    if (!v.is_string()) Fail(file_, std::string("field '") + key + "' must be a string");
    return v.get<std::string>();
  }

 private:
  std::int64_t PositiveIntValue(const char* key) const {
    const json& v = doc_[key];
    if (!v.is_number_integer() || v.get<std::int64_t>() <= 0) {
      Fail(file_, std::string("field '") + key + "' must be a positive integer, got " + v.dump());
    }
    return v.get<std::int64_t>();
  }

  const json& doc_;
  const std::string& file_;
};

}  // namespace kvfold
