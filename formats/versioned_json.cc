#include "formats/versioned_json.h"

#include "formats/error.h"
#include "formats/json_file.h"

namespace kvfold {

nlohmann::json ReadVersionedJson(const std::string& path, const std::string& schema,
                                 int format_version, const std::string& what) {
  nlohmann::json j = ReadJsonFile(path);
  if (!j.is_object() || !j.contains("schema") || j["schema"] != schema) {
    Fail(path, "not a kvfold " + what + " (schema is not " + schema + ")");
  }
  if (!j.contains("format_version") || j["format_version"] != format_version) {
    Fail(path,
         "format_version " +
             (j.contains("format_version") ? j["format_version"].dump() : std::string("missing")) +
             " is not supported (this kvfold reads " + std::to_string(format_version) + ")");
  }
  return j;
}

}  // namespace kvfold
