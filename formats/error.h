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

// Throws Error("<where>: <what>"), the message shape every kvfold error uses.
[[noreturn]] inline void Fail(const std::string& where, const std::string& what) {
  throw Error(where.empty() ? what : where + ": " + what);
}

}  // namespace kvfold
