// Loading calibration/evaluation text: the whole file, validated as strict UTF-8.
#pragma once

#include <cstddef>
#include <optional>
#include <string>
#include <string_view>

namespace kvfold {

// Offset of the first byte that breaks strict UTF-8 (overlong forms, surrogates and code points
// above U+10FFFF are invalid), or nullopt when `text` is valid.
std::optional<std::size_t> FindInvalidUtf8(std::string_view text);

// Reads `path`; throws Error naming the file for a missing/unreadable file, an empty file, or
// invalid UTF-8 (with the byte offset).
std::string LoadText(const std::string& path);

}  // namespace kvfold
