// Reading a JSON file whole: an unreadable file, invalid JSON or nesting deeper than kMaxJsonDepth
// is one error naming the file.
#pragma once

#include <nlohmann/json.hpp>
#include <string>
#include <string_view>

namespace kvfold {

// The deepest nesting of arrays and objects kvfold reads. Real files nest a few levels; a hostile
// one nested 100000 deep would overflow the stack of the code that walks (or copies, or frees)
// the parsed tree recursively.
constexpr int kMaxJsonDepth = 512;

// Throws Error naming `where` when `text` nests arrays and objects deeper than kMaxJsonDepth. A
// byte scan that skips strings, cheap enough to run before every parse.
void CheckJsonDepth(std::string_view text, const std::string& where);

// The file parsed, after CheckJsonDepth.
nlohmann::json ReadJsonFile(const std::string& path);

}  // namespace kvfold
