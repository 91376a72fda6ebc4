#include "calib/hf/utf8.h"

namespace kvfold::hf {

std::size_t CodePointLength(std::string_view text, std::size_t i) {
  const auto c = static_cast<unsigned char>(text[i]);
  std::size_t len = c < 0x80 ? 1 : c >= 0xf0 ? 4 : c >= 0xe0 ? 3 : c >= 0xc0 ? 2 : 1;
  return i + len <= text.size() ? len : 1;
}

char32_t CodePointAt(std::string_view text, std::size_t i) {
  const std::size_t len = CodePointLength(text, i);
  const auto c = static_cast<unsigned char>(text[i]);
  if (len == 1) return c;
  char32_t cp = c & (0x7f >> len);
  for (std::size_t k = 1; k < len; ++k)
    cp = (cp << 6) | (static_cast<unsigned char>(text[i + k]) & 0x3f);
  return cp;
}

std::string EncodeUtf8(char32_t cp) {
  std::string out;
  if (cp < 0x80) {
    out += static_cast<char>(cp);
  } else if (cp < 0x800) {
    out += static_cast<char>(0xc0 | (cp >> 6));
    out += static_cast<char>(0x80 | (cp & 0x3f));
  } else if (cp < 0x10000) {
    out += static_cast<char>(0xe0 | (cp >> 12));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3f));
    out += static_cast<char>(0x80 | (cp & 0x3f));
  } else {
    out += static_cast<char>(0xf0 | (cp >> 18));
    out += static_cast<char>(0x80 | ((cp >> 12) & 0x3f));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3f));
    out += static_cast<char>(0x80 | (cp & 0x3f));
  }
  return out;
}

bool IsTrimmedSpace(char32_t cp) {
  return (cp >= 0x09 && cp <= 0x0d) || cp == 0x20 || cp == 0x85 || cp == 0xa0 || cp == 0x1680 ||
         (cp >= 0x2000 && cp <= 0x200a) || cp == 0x2028 || cp == 0x2029 || cp == 0x202f ||
         cp == 0x205f || cp == 0x3000 || cp == 0xfeff;
}

std::string_view TrimStart(std::string_view text) {
  std::size_t i = 0;
  while (i < text.size() && IsTrimmedSpace(CodePointAt(text, i))) i += CodePointLength(text, i);
  return text.substr(i);
}

std::string_view TrimEnd(std::string_view text) {
  std::size_t end = 0;  // end of the last non-space code point
  for (std::size_t i = 0; i < text.size(); i += CodePointLength(text, i)) {
    if (!IsTrimmedSpace(CodePointAt(text, i))) end = i + CodePointLength(text, i);
  }
  return text.substr(0, end);
}

}  // namespace kvfold::hf
