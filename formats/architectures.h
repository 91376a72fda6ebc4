// The architectures kvfold reads, one entry per config.json model_type: the defaults
// transformers' config class gives and the fields that are the architecture's own (biases, norms,
// activation, attention windows and soft-caps). Adding an architecture is an entry here, its
// tensor names (formats/tensor_names.cc) and its layer's math where it differs from Llama's
// (runtime_check/llama_forward.cc reads the flags the entry sets).
#pragma once

#include <cstdint>
#include <string>

#include "formats/config_fields.h"
#include "formats/model_config.h"

namespace kvfold {

struct ArchitectureEntry {
  const char* model_type;
  std::int64_t default_head_dim;  // when config.json has none; 0: hidden_size / heads
  bool tied_by_default;           // tie_word_embeddings when config.json has none
  // Reads the architecture's own fields into `c`, after the shared ones (sizes, RoPE) are read;
  // throws Error naming the file and the field.
  void (*read)(const FieldReader& f, ModelConfig& c);
};

// The entry of `model_type`; throws Error("<file>: unsupported model_type ...") listing the
// supported ones (with a hint for near misses such as Gemma 3's image-text model_type).
const ArchitectureEntry& FindArchitecture(const std::string& model_type, const std::string& file);

}  // namespace kvfold
