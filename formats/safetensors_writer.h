// Writing safetensors files: deterministic (tensors and keys in name order, header padded to 8
// bytes) and atomic (temporary file, then rename). A whole model, sharded and written as it
// goes: formats/safetensors_shards.h.
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

// Refuses (Error naming `where`) an empty or reserved name, a negative dimension, or bytes that
// are not dtype size x shape product long.
void CheckTensorToWrite(const TensorToWrite& t, const std::string& where);

// Writes one safetensors file atomically. Throws Error naming `path` on a size mismatch,
// a duplicate name, or a failed write.
void WriteSafetensors(const std::string& path, std::vector<TensorToWrite> tensors,
                      const std::map<std::string, std::string>& metadata = {});

}  // namespace kvfold
