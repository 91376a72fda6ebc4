// The name<key=value,...> grammar of kvfold's pipeline text (--passes) and cache specs
// (--kv-cache), parsed in one place. Items are split at commas; an item without '=' continues
// the previous value as a list (protect=0,1). Empty items, items with no key and repeated keys
// are refused. Spaces around keys and values are ignored.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace kvfold {

using SpecParams = std::vector<std::pair<std::string, std::string>>;

// The items of `body` (the text between '<' and '>') in order; errors are Error("<where>: ...").
SpecParams ParseSpecParams(const std::string& body, const std::string& where);

// "0,1" -> {"0", "1"}; unlike getline it keeps empty items ("0,,1" has three), for the caller to
// refuse.
std::vector<std::string> SplitSpecList(const std::string& value);

std::string TrimSpaces(const std::string& s);

// A value that is all of an integer / a finite number ("2", "-3", "0.5", "1e-3"), or nothing.
std::optional<std::int64_t> ParseSpecInt(const std::string& value);
std::optional<double> ParseSpecNumber(const std::string& value);

// `x` in the shortest form that reads back as the same double ("0.5", "1e-09", "0.0625"): how
// kvfold prints a number it was given.
std::string FormatNumber(double x);

}  // namespace kvfold
