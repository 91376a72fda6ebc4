#include "runtime_check/spec_text.h"

#include <algorithm>
#include <cmath>

#include "formats/error.h"

namespace kvfold {
namespace {

constexpr const char* kWhere = "--kv-cache";

std::string Trim(const std::string& s) {
  const auto a = s.find_first_not_of(" \t");
  if (a == std::string::npos) return "";
  return s.substr(a, s.find_last_not_of(" \t") - a + 1);
}

// "a=1,b=2," -> {"a=1", "b=2", ""}: unlike getline, keeps empty items so they can be refused.
std::vector<std::string> SplitItems(const std::string& s) {
  std::vector<std::string> items(1);
  for (char c : s) {
    if (c == ',') {
      items.emplace_back();
    } else {
      items.back() += c;
    }
  }
  return items;
}

}  // namespace

std::vector<std::pair<std::string, std::string>> SpecItems(const std::string& text, const std::string& name) {
  const std::string t = Trim(text);
  const std::string head = name + "<";
  if (t.rfind(head, 0) != 0 || t.back() != '>') Fail(kWhere, "'" + text + "' is not of the form " + name + "<key=value,...>");
  std::vector<std::pair<std::string, std::string>> items;
  for (std::string item : SplitItems(t.substr(head.size(), t.size() - head.size() - 1))) {
    item = Trim(item);
    if (item.empty()) Fail(kWhere, "empty item in '" + text + "'");
    const auto eq = item.find('=');
    if (eq == std::string::npos) {
      if (items.empty() || item.empty()) Fail(kWhere, "'" + item + "' needs a key (key=value)");
      items.back().second += "," + item;
      continue;
    }
    const std::string key = Trim(item.substr(0, eq));
    for (const auto& [k, v] : items) {
      if (k == key) Fail(kWhere, key + " given twice");
    }
    items.emplace_back(key, Trim(item.substr(eq + 1)));
  }
  return items;
}

std::int64_t SpecInt(const std::string& key, const std::string& v, std::int64_t lo, std::int64_t hi) {
  std::size_t used = 0;
  long long x = 0;
  try {
    x = std::stoll(v, &used);
  } catch (const std::exception&) {
    used = 0;
  }
  if (used == 0 || used != v.size() || x < lo || x > hi) {
    Fail(kWhere, key + "=" + v + " is not an integer in [" + std::to_string(lo) + ", " + std::to_string(hi) + "]");
  }
  return x;
}

double SpecNumber(const std::string& key, const std::string& v) {
  std::size_t used = 0;
  double x = 0;
  try {
    x = std::stod(v, &used);
  } catch (const std::exception&) {
    used = 0;
  }
  if (used == 0 || used != v.size() || !std::isfinite(x)) Fail(kWhere, key + "=" + v + " is not a number");
  return x;
}

double SpecFraction(const std::string& key, const std::string& v, bool zero_ok) {
  const double x = SpecNumber(key, v);
  if (!(zero_ok ? x >= 0 : x > 0) || !(x <= 1)) Fail(kWhere, key + "=" + v + " must be in " + (zero_ok ? "[0, 1]" : "(0, 1]"));
  return x;
}

std::vector<int> SpecIntList(const std::string& key, const std::string& value) {
  std::vector<int> out;
  for (const std::string& n : SplitItems(value)) out.push_back(static_cast<int>(SpecInt(key, Trim(n), 0, 1 << 20)));
  std::sort(out.begin(), out.end());
  if (std::adjacent_find(out.begin(), out.end()) != out.end()) Fail(kWhere, key + "=" + value + " lists a value twice");
  return out;
}

}  // namespace kvfold
