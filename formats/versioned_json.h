// Reading kvfold's own versioned JSON documents (eviction and MiKV tables): valid JSON, the
// expected "schema", a "format_version" this kvfold reads. Errors name the file.
#pragma once

#include <nlohmann/json.hpp>
#include <string>

namespace kvfold {

// `what` names the document in errors ("eviction policy table").
nlohmann::json ReadVersionedJson(const std::string& path, const std::string& schema,
                                 int format_version, const std::string& what);

}  // namespace kvfold
