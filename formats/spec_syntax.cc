#include "formats/spec_syntax.h"

#include <cctype>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <exception>

#include "formats/error.h"

namespace kvfold {

std::string TrimSpaces(const std::string& s) {
  std::size_t a = 0, b = s.size();
  while (a < b && std::isspace(static_cast<unsigned char>(s[a]))) ++a;
  while (b > a && std::isspace(static_cast<unsigned char>(s[b - 1]))) --b;
  return s.substr(a, b - a);
}

std::optional<std::int64_t> ParseSpecInt(const std::string& value) {
  std::size_t used = 0;
  long long x = 0;
  try {
    x = std::stoll(value, &used);
  } catch (const std::exception&) {
    return std::nullopt;
  }
  if (used == 0 || used != value.size()) return std::nullopt;
  return x;
}

std::optional<double> ParseSpecNumber(const std::string& value) {
  std::size_t used = 0;
  double x = 0;
  try {
    x = std::stod(value, &used);
  } catch (const std::exception&) {
    return std::nullopt;
  }
  if (used == 0 || used != value.size() || !std::isfinite(x)) return std::nullopt;
  return x;
}

std::vector<std::string> SplitSpecList(const std::string& value) {
  std::vector<std::string> items(1);
  for (char c : value) {
    if (c == ',') {
      items.emplace_back();
    } else {
      items.back() += c;
    }
  }
  return items;
}

SpecParams ParseSpecParams(const std::string& body, const std::string& where) {
  SpecParams params;
  for (const std::string& raw : SplitSpecList(body)) {
    const std::string item = TrimSpaces(raw);
    if (item.empty()) Fail(where, "empty parameter in '<" + body + ">'");
    const std::size_t eq = item.find('=');
    if (eq == std::string::npos) {
      if (params.empty()) Fail(where, "parameter '" + item + "' needs a value (key=value)");
      params.back().second += "," + item;  // protect=0,1
      continue;
    }
    const std::string key = TrimSpaces(item.substr(0, eq));
    if (key.empty()) Fail(where, "'" + item + "' needs a key (key=value)");
    for (const auto& [k, v] : params) {
      if (k == key) Fail(where, "parameter '" + key + "' given twice");
    }
    params.emplace_back(key, TrimSpaces(item.substr(eq + 1)));
  }
  return params;
}

std::string FormatNumber(double x) {
  char buf[32];
  for (int precision = 1; precision <= 17; ++precision) {
    std::snprintf(buf, sizeof buf, "%.*g", precision, x);
    if (std::strtod(buf, nullptr) == x) break;
  }
  return buf;
}

}  // namespace kvfold
