// kvfold inspect MODEL [--json]
#include <cstdio>
#include <string>

#include "converter/export/gguf_inspect.h"
#include "converter/model_summary.h"
#include "formats/checkpoint.h"
#include "tools/commands.h"

namespace kvfold {

Command AddInspectCommand(CLI::App& app) {
  struct Args {
    std::string model;
    bool json = false;
  };
  auto args = std::make_shared<Args>();
  CLI::App* sub =
      app.add_subcommand("inspect", "Describe a checkpoint: heads, KV heads, KV bytes/token");
  sub->add_option("MODEL", args->model, "HuggingFace model folder, or a GGUF file")->required();
  sub->add_flag("--json", args->json, "Print JSON instead of text");
  return {sub, [args] {
            if (IsGgufFile(args->model)) {
              const nlohmann::ordered_json j = InspectGguf(args->model);
              const std::string out = args->json ? j.dump(2) + "\n" : GgufSummaryText(j);
              std::fwrite(out.data(), 1, out.size(), stdout);
              return 0;
            }
            const Checkpoint ck = OpenCheckpoint(args->model);
            const ModelSummary s = SummarizeCheckpoint(ck);
            const std::string out = args->json ? SummaryJson(s) : SummaryText(s);
            std::fwrite(out.data(), 1, out.size(), stdout);
            return 0;
          }};
}

}  // namespace kvfold
