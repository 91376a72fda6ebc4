// The kvfold subcommands: each registers its options on the CLI11 app and returns the function
// that runs it. A subcommand only turns arguments into a library call and prints the result.
#pragma once

#include <CLI/CLI.hpp>
#include <cstdint>
#include <functional>

#include "converter/job.h"

namespace kvfold {

struct Command {
  CLI::App* sub;             // the parsed subcommand
  std::function<int()> run;  // runs it with the parsed arguments
};

// --threads: 0 (all cores) up to 4 x this machine's cores; more only spawns idle threads.
CLI::Validator ThreadCount();

// A floating-point option: the whole text is a finite number in [lo, hi] (NaN, inf, "1x" and
// out-of-range values exit 2 naming the option). Every such option on the command line uses it.
CLI::Validator FiniteRange(double lo, double hi);

// --budget fractions, e.g. 0.5,0.25: each in (0, 1] (exit 2 otherwise).
CLI::Validator BudgetList();

// --hidden-memory MIB: the hidden states a sweep keeps in memory per model, stored in `bytes`.
void AddHiddenMemoryOption(CLI::App* sub, std::uint64_t* bytes);

// --rank-timeout SECONDS: under mpirun, how long a rank waits for another (formats/ranks.h).
void AddRankTimeoutOption(CLI::App* sub);

// --device, --threads, --hidden-memory and --rank-timeout into a job's ComputePart.
void AddComputeOptions(CLI::App* sub, ComputePart& compute);

Command AddInspectCommand(CLI::App& app);
Command AddEvalCommand(CLI::App& app);
Command AddConvertCommand(CLI::App& app);
Command AddReportCommand(CLI::App& app);
Command AddTokenizeCommand(CLI::App& app);
Command AddPlanCommand(CLI::App& app);
Command AddExportCommand(CLI::App& app);

}  // namespace kvfold
