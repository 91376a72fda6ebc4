// kvfold export: a checkpoint kvfold reads (a source checkpoint or a kvfold output) written in
// another output format, unchanged: the library entry point behind tools/cmd_export.cc.
#pragma once

#include <string>
#include <vector>

#include "converter/export/model_exporter.h"

namespace kvfold {

struct ExportJob {
  std::string model;   // HF folder
  std::string output;  // a file for gguf, a folder for hf
  ExportOptions options;
  bool force = false;  // replace an output kvfold wrote
};

struct ExportResult {
  std::string architecture;  // the output's (gguf: llama.cpp's name)
  std::vector<std::string> files;
  std::vector<std::string> not_copied;
  std::uint64_t bytes = 0;  // of the output
  double seconds = 0;
};

ExportResult ExportModel(const ExportJob& job);

}  // namespace kvfold
