#include "formats/json_file.h"

#include "formats/error.h"
#include "formats/mapped_file.h"

namespace kvfold {

nlohmann::json ReadJsonFile(const std::string& path) {
  const MappedFile file(path);  // a regular file only, opened without blocking on a FIFO
  try {
    return nlohmann::json::parse(file.bytes().begin(), file.bytes().end());
  } catch (const nlohmann::json::exception& e) {
    Fail(path, std::string("not valid JSON (") + e.what() + ")");
  }
}

}  // namespace kvfold
