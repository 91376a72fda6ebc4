// kvfold inspect of a GGUF file: what llama.cpp will run (architecture, heads and KV heads per
// layer, KV bytes per token at its default F16 cache and at F32), the tokenizer, and how kvfold
// made it (kvfold.version, the conversion's kvfold.json). Read as untrusted input.
#pragma once

#include <nlohmann/json.hpp>
#include <string>

namespace kvfold {

// Whether `path` is a regular file that starts with GGUF's magic.
bool IsGgufFile(const std::string& path);

nlohmann::ordered_json InspectGguf(const std::string& path);
std::string GgufSummaryText(const nlohmann::ordered_json& summary);

}  // namespace kvfold
