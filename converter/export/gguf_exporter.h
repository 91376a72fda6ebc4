// The GGUF output (llama.cpp): one file, written as the layers arrive (formats/gguf.h) and
// committed atomically. Tensors get llama.cpp's names, Q/K rows its RoPE pair layout
// (converter/export/gguf_model.h) and the dtype asked for (1-D tensors stay F32, as llama.cpp's
// converter keeps them); the metadata carries the architecture, the tokenizer
// (converter/export/gguf_vocabulary.h) and, for a kvfold output, its kvfold.json (`kvfold.*`).
#pragma once

#include <memory>
#include <string>

#include "converter/export/model_exporter.h"

namespace kvfold {

std::unique_ptr<ModelExporter> MakeGgufExporter(const std::string& path, const Checkpoint& source,
                                                const ExportOptions& options);

// Refuses (Error naming `path`) an existing `path` unless `replace`, and then anything but a GGUF
// file kvfold wrote (its header parses and carries kvfold.version): kvfold replaces only its own.
void CheckGgufOutputPath(const std::string& path, bool replace);

}  // namespace kvfold
