// kvfold: offline KV-cache compression for transformer checkpoints. Dispatches subcommands and
// turns every error into one line on stderr and a non-zero exit:
//   1  bad input or failed I/O      kvfold: error: <file or option>: <problem>
//   2  a command line CLI11 refuses kvfold: error: <option>: <problem>
//   3  an internal error (a bug)    kvfold: error: internal: <what>
//   130 / 143  SIGINT / SIGTERM, after removing the partial output
#include <malloc.h>

#include <cstdio>
#include <string>

#include "formats/error.h"
#include "formats/fatal_signals.h"
#include "formats/version.h"
#include "runtime_check/blas_core.h"
#include "tools/commands.h"

namespace {

std::string FirstLine(const std::string& s) { return s.substr(0, s.find('\n')); }

}  // namespace

int main(int argc, char** argv) {
  kvfold::EnsureFastBlasCore(argv);  // before any matrix product; may re-execute kvfold
  // A fixed threshold: every buffer of 256 KiB or more is its own mapping, returned to the
  // system when freed. glibc's default raises the threshold to the largest buffer freed so far,
  // after which a layer loop's per-layer buffers come from the heap and fragment it: peak RSS
  // then grows with the layer count (+2 MiB a layer on the streaming_memory test's model).
  mallopt(M_MMAP_THRESHOLD, 256 * 1024);
  kvfold::InstallFatalSignalHandlers();
  CLI::App app{"kvfold: make the KV cache of transformer checkpoints smaller"};
  app.set_version_flag("--version", std::string("kvfold ") + kvfold::kVersion + "\nBLAS: " + kvfold::BlasDescription());
  app.require_subcommand(1);
  const std::vector<kvfold::Command> commands = {
      kvfold::AddInspectCommand(app),
      kvfold::AddEvalCommand(app),
      kvfold::AddConvertCommand(app),
      kvfold::AddReportCommand(app),
      kvfold::AddPlanCommand(app),
      kvfold::AddTokenizeCommand(app),
  };

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    if (e.get_exit_code() == 0) return app.exit(e);  // --help, --version
    std::fprintf(stderr, "kvfold: error: %s\n", kvfold::Printable(FirstLine(e.what())).c_str());
    return 2;
  }
  try {
    for (const auto& c : commands) {
      if (c.sub->parsed()) return c.run();
    }
  } catch (const kvfold::Error& e) {
    std::fprintf(stderr, "kvfold: error: %s\n", FirstLine(e.what()).c_str());
    return 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "kvfold: error: internal: %s\n", kvfold::Printable(FirstLine(e.what())).c_str());
    return 3;
  }
  return 1;
}
