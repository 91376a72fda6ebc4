#include "runtime_check/spec_text.h"

#include <algorithm>
#include <optional>

#include "formats/error.h"
#include "formats/spec_syntax.h"

namespace kvfold {
namespace {

constexpr const char* kWhere = "--kv-cache";

}  // namespace

std::vector<std::pair<std::string, std::string>> SpecItems(const std::string& text,
                                                           const std::string& name) {
  const std::string t = TrimSpaces(text);
  const std::string head = name + "<";
  if (t.rfind(head, 0) != 0 || t.back() != '>')
    Fail(kWhere, "'" + text + "' is not of the form " + name + "<key=value,...>");
  return ParseSpecParams(t.substr(head.size(), t.size() - head.size() - 1), kWhere);
}

std::int64_t SpecInt(const std::string& key, const std::string& v, std::int64_t lo,
                     std::int64_t hi) {
  const std::optional<std::int64_t> x = ParseSpecInt(v);
  if (!x || *x < lo || *x > hi) {
    Fail(kWhere, key + "=" + v + " is not an integer in [" + std::to_string(lo) + ", " +
                     std::to_string(hi) + "]");
  }
  return *x;
}

double SpecNumber(const std::string& key, const std::string& v) {
  const std::optional<double> x = ParseSpecNumber(v);
  if (!x) Fail(kWhere, key + "=" + v + " is not a number");
  return *x;
}

double SpecFraction(const std::string& key, const std::string& v, bool zero_ok) {
  const double x = SpecNumber(key, v);
  if (!(zero_ok ? x >= 0 : x > 0) || !(x <= 1))
    Fail(kWhere, key + "=" + v + " must be in " + (zero_ok ? "[0, 1]" : "(0, 1]"));
  return x;
}

std::vector<int> SpecIntList(const std::string& key, const std::string& value) {
  std::vector<int> out;
  for (const std::string& n : SplitSpecList(value))
    out.push_back(static_cast<int>(SpecInt(key, TrimSpaces(n), 0, 1 << 20)));
  std::sort(out.begin(), out.end());
  if (std::adjacent_find(out.begin(), out.end()) != out.end())
    Fail(kWhere, key + "=" + value + " lists a value twice");
  return out;
}

}  // namespace kvfold
