// kvfold: offline KV-cache compression for transformer checkpoints. Dispatches subcommands and
// turns every error into one line on stderr and a non-zero exit:
//   1  bad input or failed I/O      kvfold: error: <file or option>: <problem>
//   2  a command line CLI11 refuses kvfold: error: <option>: <problem>
//   3  an internal error (a bug)    kvfold: error: internal: <what>
//   130 / 143  SIGINT / SIGTERM, after removing the partial output
// Under mpirun (formats/ranks.h) an error names its rank ("kvfold: error: rank 1 of 4: ...") and
// ends every rank with the same status; only the first rank prints results.

#include <cstdio>
#include <string>

#include "formats/error.h"
#include "formats/fatal_signals.h"
#include "formats/heap_policy.h"
#include "formats/ranks.h"
#include "formats/version.h"
#include "runtime_check/blas_core.h"
#include "runtime_check/blas_threads.h"
#include "runtime_check/tensor_cache.h"
#include "tools/commands.h"

namespace {

std::string FirstLine(const std::string& s) { return s.substr(0, s.find('\n')); }

// "kvfold: error: " and, with several ranks, which rank failed.
std::string ErrorPrefix() {
  std::string prefix = "kvfold: error: ";
  if (kvfold::RankCount() > 1) {
    prefix += "rank " + std::to_string(kvfold::Rank()) + " of " +
              std::to_string(kvfold::RankCount()) + ": ";
  }
  return prefix;
}

// Ends this run with `status`: one line on stderr for an error, and every rank ends with it.
int Finish(int status, const std::string& error_line = "") {
  if (!error_line.empty()) kvfold::AbortRanks(ErrorPrefix() + error_line, status);
  kvfold::StopRanks();
  return status;
}

}  // namespace

int main(int argc, char** argv) {
  // Before any matrix product. A no-op when started by bin/kvfold, which chose already; run as
  // itself, kvfold-core may re-execute itself here.
  kvfold::EnsureFastBlasCore(argv);
  kvfold::SleepIdleBlasThreads();  // runtime_check/blas_threads.h
  kvfold::SetHeapPolicy();         // formats/heap_policy.h
  kvfold::InstallTensorCache();    // runtime_check/tensor_cache.h
  kvfold::InstallFatalSignalHandlers();
  kvfold::StartRanks(&argc, &argv);
  // Every rank computes the same results; the first prints them.
  if (!kvfold::IsFirstRank() && std::freopen("/dev/null", "w", stdout) == nullptr) {
    return Finish(1, "/dev/null: cannot open");
  }
  CLI::App app{"kvfold: make the KV cache of transformer checkpoints smaller"};
  const std::string ranks =
      kvfold::MpiBuilt() ? "MPI (mpirun -np N kvfold ...)" : "one process (built without MPI)";
  app.set_version_flag("--version", std::string("kvfold ") + kvfold::kVersion + "\nBLAS: " +
                                        kvfold::BlasDescription() + "\nranks: " + ranks);
  app.require_subcommand(1);
  const std::vector<kvfold::Command> commands = {
      kvfold::AddInspectCommand(app), kvfold::AddEvalCommand(app), kvfold::AddConvertCommand(app),
      kvfold::AddReportCommand(app),  kvfold::AddPlanCommand(app), kvfold::AddTokenizeCommand(app),
      kvfold::AddExportCommand(app),
  };

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    if (e.get_exit_code() == 0) return Finish(app.exit(e));  // --help, --version
    return Finish(2, kvfold::Printable(FirstLine(e.what())));
  }
  try {
    for (const auto& c : commands) {
      if (c.sub->parsed()) return Finish(c.run());
    }
  } catch (const kvfold::Error& e) {
    return Finish(1, FirstLine(e.what()));
  } catch (const std::exception& e) {
    return Finish(3, "internal: " + kvfold::Printable(FirstLine(e.what())));
  }
  return Finish(1);
}
