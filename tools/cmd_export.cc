// kvfold export MODEL -o model.gguf [--dtype f32|f16|bf16] [--format gguf|hf] [--force]
#include <cstdio>
#include <memory>
#include <string>

#include "converter/export_model.h"
#include "tools/commands.h"

namespace kvfold {

Command AddExportCommand(CLI::App& app) {
  struct Args {
    ExportJob job;
    std::string format = "gguf";
    bool quiet = false;
  };
  auto a = std::make_shared<Args>();
  CLI::App* sub = app.add_subcommand(
      "export", "Write a checkpoint (source or kvfold output) as GGUF for llama.cpp, unchanged");
  sub->add_option("MODEL", a->job.model, "HuggingFace model folder (a source or kvfold output)")
      ->required();
  sub->add_option("-o,--output", a->job.output,
                  "Output file (gguf) or folder (hf); refused if it exists, unless --force")
      ->required();
  sub->add_option("--format", a->format, "gguf (llama.cpp) or hf")
      ->capture_default_str()
      ->check(CLI::IsMember({"gguf", "hf"}));
  sub->add_option("--dtype", a->job.options.dtype,
                  "GGUF weights: f32, f16 or bf16 (default: the checkpoint's own; 1-D tensors "
                  "stay f32)")
      ->check(CLI::IsMember({"f32", "f16", "bf16"}));
  sub->add_flag("--force", a->job.force, "Replace an output kvfold wrote");
  sub->add_flag("--quiet", a->quiet, "No notes on stderr");
  return {sub, [a] {
            a->job.options.format = ParseOutputFormat(a->format, "--format");
            a->job.options.progress = !a->quiet;
            const ExportResult r = ExportModel(a->job);
            std::printf("exported     %s -> %s (%s, architecture %s)\n", a->job.model.c_str(),
                        a->job.output.c_str(), a->format.c_str(), r.architecture.c_str());
            std::printf("size         %.1f MiB in %.1f s\n",
                        static_cast<double>(r.bytes) / (1 << 20), r.seconds);
            if (a->format == "gguf") {
              std::printf("run it       llama-cli -m %s  (or llama-server -m %s)\n",
                          a->job.output.c_str(), a->job.output.c_str());
            }
            return 0;
          }};
}

}  // namespace kvfold
