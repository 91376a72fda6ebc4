// kvfold's version, recorded in every file kvfold writes (kvfold.json, reports).
#pragma once

namespace kvfold {
constexpr const char* kVersion = "0.1.0";
}  // namespace kvfold
