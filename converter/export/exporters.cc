// The output formats kvfold writes: one line each.
#include "converter/export/gguf_exporter.h"
#include "converter/export/hf_exporter.h"
#include "converter/export/model_exporter.h"
#include "formats/error.h"

namespace kvfold {

OutputFormat ParseOutputFormat(const std::string& text, const std::string& where) {
  if (text == "hf") return OutputFormat::kHf;
  if (text == "gguf") return OutputFormat::kGguf;
  Fail(where, "unknown output format '" + text + "' (hf or gguf)");
}

const char* OutputFormatName(OutputFormat format) {
  return format == OutputFormat::kGguf ? "gguf" : "hf";
}

std::unique_ptr<ModelExporter> MakeExporter(const std::string& path, const Checkpoint& source,
                                            const ExportOptions& options) {
  switch (options.format) {
    case OutputFormat::kHf:
      return MakeHfExporter(path, source);
    case OutputFormat::kGguf:
      return MakeGgufExporter(path, source, options);
  }
  Fail(path, "internal error: unknown output format");
}

}  // namespace kvfold
