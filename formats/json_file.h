// Reading a JSON file whole: an unreadable file or invalid JSON is one error naming the file.
#pragma once

#include <nlohmann/json.hpp>
#include <string>

namespace kvfold {

nlohmann::json ReadJsonFile(const std::string& path);

}  // namespace kvfold
