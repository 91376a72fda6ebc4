// tokenizer.json "decoder": turns token strings back into text. ByteLevel, Metaspace, and Sequence
// of Replace, ByteFallback, Fuse and Strip (the sentencepiece-converted files' chain). Other types
// are refused when decoding is asked for (encoding does not need a decoder).
#pragma once

#include <memory>
#include <nlohmann/json_fwd.hpp>
#include <string>
#include <vector>

namespace kvfold::hf {

class Decoder {
 public:
  virtual ~Decoder() = default;
  // One step of the chain: token strings in, (fewer or equal) strings out.
  virtual std::vector<std::string> Apply(std::vector<std::string> tokens) const = 0;
};

// Null for a JSON null (tokens are joined as they are).
std::unique_ptr<Decoder> MakeDecoder(const nlohmann::json& config, const std::string& where);

}  // namespace kvfold::hf
