// Checkpoint: an opened HuggingFace model folder (config.json, safetensors, a tokenizer file),
// with every tensor the config implies checked for presence, shape and dtype up front.
#pragma once

#include <cstdint>
#include <string>

#include "formats/model_config.h"
#include "formats/tensor_names.h"
#include "formats/tensor_store.h"

namespace kvfold {

struct Checkpoint {
  std::string dir;
  ModelConfig config;
  TensorStore tensors;
  std::string tokenizer_path;  // FindTokenizerFile(dir): empty when the folder has none

  // The tensor for `id`; call only for ids in RequiredTensors(config) (validated on open).
  const TensorRef& Tensor(const TensorId& id) const { return tensors.Get(HfTensorName(id)); }
  // Bytes per element of the stored attention weights (the KV cache's natural dtype).
  std::int64_t StoredElementBytes() const;
  std::int64_t ParameterCount() const;
};

// The tokenizer a model folder is read with: tokenizer.json (HF tokenizers) when present, else a
// sentencepiece tokenizer.model; empty when it has neither. Throws Error when one is not a
// regular file.
std::string FindTokenizerFile(const std::string& dir);

// Opens and validates `dir`. Reports every missing or mis-shaped tensor in one error line.
Checkpoint OpenCheckpoint(const std::string& dir);

}  // namespace kvfold
