// ModelExporter: one output format of a converted (or merely exported) model. The draft hands it
// each tensor once, sealed and in its final values (a layer's tensors together, layers in order,
// then the tensors of no layer); Finish writes what is not a tensor (config or metadata, the
// tokenizer, the files passes add, kvfold.json's provenance) and makes the output final. The
// exporter owns its naming: tensors arrive with their typed id (formats/tensor_names.h).
//
// Formats register in converter/export/exporters.cc: adding one is a new file plus a line there.
#pragma once

#include <functional>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "formats/checkpoint.h"
#include "formats/safetensors_writer.h"
#include "formats/tensor_names.h"

namespace kvfold {

// Files a pass adds beside the model: name -> write(path), written atomically.
using ExtraFiles = std::map<std::string, std::function<void(const std::string& path)>>;

struct ExportedModel {
  const Checkpoint& source;
  const ModelConfig& config;  // the output's
  const ExtraFiles& extra_files;
  // kvfold.json: written beside the weights or carried in the file's metadata; null when the
  // output records no conversion (an export of a checkpoint kvfold did not write).
  const nlohmann::ordered_json* provenance = nullptr;
};

class ModelExporter {
 public:
  virtual ~ModelExporter() = default;  // an unfinished output is removed
  // `t.name` is the HF name the draft keys the tensor by; `id` its role and layer (none for a
  // name outside the Llama family, e.g. rotary_emb.inv_freq).
  virtual void Add(const std::optional<TensorId>& id, const TensorToWrite& t) = 0;
  // Returns the files written (relative to the output folder, or the output file's name).
  virtual std::vector<std::string> Finish(const ExportedModel& model) = 0;
  // Source files that do not travel into the output, as "name (why)", for a note to the user.
  virtual std::vector<std::string> NotCopied() const = 0;
};

enum class OutputFormat { kHf, kGguf };

// "hf" | "gguf"; throws Error naming `where` for anything else.
OutputFormat ParseOutputFormat(const std::string& text, const std::string& where);
const char* OutputFormatName(OutputFormat format);

struct ExportOptions {
  OutputFormat format = OutputFormat::kHf;
  // GGUF: "f32", "f16" or "bf16" for the 2-D weights; empty = the source's own dtype.
  std::string dtype;
  bool progress = true;  // notes to stderr (what llama.cpp will do differently)
};

// The exporter of `options.format` writing into `path` (an existing folder for hf, a file to
// create for gguf). Refuses here, by name, what the format cannot represent of `source`'s
// checkpoint; what passes add later is refused as it arrives.
std::unique_ptr<ModelExporter> MakeExporter(const std::string& path, const Checkpoint& source,
                                            const ExportOptions& options);

}  // namespace kvfold
