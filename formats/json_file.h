// Reading a JSON file whole: an unreadable file or invalid JSON is one error naming the file.
#pragma once

#include <string>

#include <nlohmann/json.hpp>

namespace kvfold {

nlohmann::json ReadJsonFile(const std::string& path);

}  // namespace kvfold
