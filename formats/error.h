// kvfold::Error: the one exception type for bad input and failed I/O. Its message is a single
// line that names the file (or object) and the problem; the CLI prints it and exits non-zero.
#pragma once

#include <stdexcept>
#include <string>

namespace kvfold {

class Error : public std::runtime_error {
 public:
  explicit Error(const std::string& message) : std::runtime_error(message) {}
};

// `s` with control characters (a NUL or newline in a file name, say) written as \xNN, so that a
// message stays one printable line.
inline std::string Printable(const std::string& s) {
  static const char* const kHex = "0123456789abcdef";
  std::string out;
  out.reserve(s.size());
  for (unsigned char c : s) {
    if (c < 0x20 || c == 0x7f) {
      out += "\\x";
      out += kHex[c >> 4];
      out += kHex[c & 15];
    } else {
      out += static_cast<char>(c);
    }
  }
  return out;
}

// Throws Error("<where>: <what>"), the message shape every kvfold error uses.
[[noreturn]] inline void Fail(const std::string& where, const std::string& what) {
  throw Error(Printable(where.empty() ? what : where + ": " + what));
}

}  // namespace kvfold
