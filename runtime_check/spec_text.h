// The `--kv-cache` spec syntax shared by evict<...> and quant<...> (the grammar itself is
// formats/spec_syntax.h, shared with --passes), plus checked number
// parsing. Every error is Error("--kv-cache: ...").
#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

namespace kvfold {

// The key=value items of "<name><...>" in order; refuses another name, a repeated key and an
// item with no key.
std::vector<std::pair<std::string, std::string>> SpecItems(const std::string& text,
                                                           const std::string& name);

std::int64_t SpecInt(const std::string& key, const std::string& value, std::int64_t lo,
                     std::int64_t hi);
double SpecNumber(const std::string& key, const std::string& value);
// A fraction in (0, 1], or [0, 1] when zero_ok.
double SpecFraction(const std::string& key, const std::string& value, bool zero_ok);
std::vector<int> SpecIntList(const std::string& key, const std::string& value);

}  // namespace kvfold
