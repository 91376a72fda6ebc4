// The HuggingFace output: safetensors shards written as the layers arrive (at most as large as
// the source's largest weight file), config.json with the output's geometry, the companion files
// (tokenizer, generation config, licence), the files passes add, and kvfold.json.
#pragma once

#include <memory>
#include <string>

#include "converter/export/model_exporter.h"

namespace kvfold {

std::unique_ptr<ModelExporter> MakeHfExporter(const std::string& dir, const Checkpoint& source);

}  // namespace kvfold
