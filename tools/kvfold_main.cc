// kvfold: offline KV-cache compression for transformer checkpoints. Dispatches subcommands and
// turns every error into one line on stderr and a non-zero exit.
#include <cstdio>
#include <string>

#include "formats/error.h"
#include "formats/version.h"
#include "tools/commands.h"

namespace {

std::string FirstLine(const std::string& s) { return s.substr(0, s.find('\n')); }

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"kvfold: make the KV cache of transformer checkpoints smaller"};
  app.set_version_flag("--version", kvfold::kVersion);
  app.require_subcommand(1);
  const std::vector<kvfold::Command> commands = {
      kvfold::AddInspectCommand(app),
      kvfold::AddEvalCommand(app),
      kvfold::AddConvertCommand(app),
      kvfold::AddReportCommand(app),
  };

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }
  try {
    for (const auto& c : commands) {
      if (c.sub->parsed()) return c.run();
    }
  } catch (const kvfold::Error& e) {
    std::fprintf(stderr, "kvfold: error: %s\n", FirstLine(e.what()).c_str());
    return 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "kvfold: internal error: %s\n", FirstLine(e.what()).c_str());
    return 2;
  }
  return 1;
}
