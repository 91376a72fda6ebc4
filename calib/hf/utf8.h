// UTF-8 helpers for the tokenizer.json reader: stepping over code points, encoding one, and the
// whitespace test JavaScript's String.prototype.trim uses (the reference implementations' rule for
// an added token's lstrip/rstrip).
#pragma once

#include <cstddef>
#include <string>
#include <string_view>

namespace kvfold::hf {

// Length in bytes of the code point starting at `text[i]` (1 for a stray byte, so callers always
// advance; the text was validated as UTF-8 before it reached the tokenizer).
std::size_t CodePointLength(std::string_view text, std::size_t i);

// The code point starting at `text[i]`.
char32_t CodePointAt(std::string_view text, std::size_t i);

std::string EncodeUtf8(char32_t cp);

// Unicode White_Space plus U+FEFF: what JavaScript's trimStart/trimEnd remove.
bool IsTrimmedSpace(char32_t cp);
std::string_view TrimStart(std::string_view text);
std::string_view TrimEnd(std::string_view text);

}  // namespace kvfold::hf
