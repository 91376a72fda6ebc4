// Writing safetensors files: deterministic (tensors and keys in name order, header padded to 8
// bytes) and atomic (temporary file, then rename), optionally sharded by size with an index.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <string_view>
#include <vector>

#include "formats/dtype.h"

namespace kvfold {

struct TensorToWrite {
  std::string name;
  DType dtype;
  std::vector<std::int64_t> shape;
  std::string_view bytes;  // owned by the caller; must be dtype size x shape product long
  // The bytes lie in a read-only MappedFile: their pages leave the resident set once written.
  bool mapped = false;
};

// Writes one safetensors file atomically. Throws Error naming `path` on a size mismatch,
// a duplicate name, or a failed write.
void WriteSafetensors(const std::string& path, std::vector<TensorToWrite> tensors,
                      const std::map<std::string, std::string>& metadata = {});

// Writes `dir`/model.safetensors, or, when the data exceeds `max_shard_bytes`,
// `dir`/model-0000i-of-0000N.safetensors plus model.safetensors.index.json (HF layout).
// Returns the file names written (relative to `dir`).
std::vector<std::string> WriteSafetensorsModel(const std::string& dir,
                                               std::vector<TensorToWrite> tensors,
                                               const std::map<std::string, std::string>& metadata,
                                               std::uint64_t max_shard_bytes);

}  // namespace kvfold
