#include "formats/json_file.h"

#include "formats/error.h"
#include "formats/mapped_file.h"

namespace kvfold {

void CheckJsonDepth(std::string_view text, const std::string& where) {
  int depth = 0;
  bool in_string = false;
  for (std::size_t i = 0; i < text.size(); ++i) {
    const char c = text[i];
    if (in_string) {
      if (c == '\\')
        ++i;  // the escaped character cannot end the string
      else if (c == '"')
        in_string = false;
    } else if (c == '"') {
      in_string = true;
    } else if (c == '[' || c == '{') {
      if (++depth > kMaxJsonDepth) {
        Fail(where, "JSON nested deeper than " + std::to_string(kMaxJsonDepth) +
                        " levels (at byte " + std::to_string(i) + ")");
      }
    } else if ((c == ']' || c == '}') && depth > 0) {
      --depth;
    }
  }
}

nlohmann::json ReadJsonFile(const std::string& path) {
  const MappedFile file(path);  // a regular file only, opened without blocking on a FIFO
  CheckJsonDepth(file.bytes(), path);
  try {
    return nlohmann::json::parse(file.bytes().begin(), file.bytes().end());
  } catch (const nlohmann::json::exception& e) {
    Fail(path, std::string("not valid JSON (") + e.what() + ")");
  }
}

}  // namespace kvfold
