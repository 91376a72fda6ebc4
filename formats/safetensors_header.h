// Parsing and validation of a safetensors file's header: nothing in it is trusted until every
// offset, size and dtype has been checked against the file it came from.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <string_view>
#include <vector>

#include "formats/dtype.h"

namespace kvfold {

struct TensorEntry {
  std::string name;
  DType dtype;
  std::vector<std::int64_t> shape;
  std::uint64_t begin = 0;  // byte offsets relative to the start of the data area
  std::uint64_t end = 0;
  std::int64_t NumElements() const;
};

struct SafetensorsHeader {
  std::uint64_t header_bytes = 0;    // the JSON length stored in the first 8 bytes
  std::uint64_t data_offset = 0;     // 8 + header_bytes
  std::vector<TensorEntry> tensors;  // sorted by name
  std::map<std::string, std::string> metadata;
};

// Largest header kvfold accepts (the reference implementation's limit).
constexpr std::uint64_t kMaxSafetensorsHeaderBytes = 100u * 1024u * 1024u;

// Parses the header of a safetensors file whose first bytes are `prefix` (at least the 8-byte
// length plus the JSON; more is fine) and whose total size is `file_size`. Checks: the length
// fits the file, the JSON is a well-formed object without duplicate names, every dtype is known,
// every shape's byte size equals its offset span, offsets lie inside the data area, tensors do
// not overlap and leave no holes. Throws Error("<file_name>: ...") on the first violation.
SafetensorsHeader ParseSafetensorsHeader(std::string_view prefix, std::uint64_t file_size,
                                         const std::string& file_name);

}  // namespace kvfold
