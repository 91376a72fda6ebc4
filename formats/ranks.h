// Ranks: kvfold run as N processes under MPI (`mpirun -np N kvfold ...`), each with a disjoint
// share of the calibration or evaluation windows. Statistics are sums (and extremes): every rank
// sums its share, and the shares are joined in rank order on rank 0, so the result is the same on
// every rank and depends on N only through the grouping of float64 sums (docs/mpi.md).
//
// Without MPI in the build, or when kvfold was not started by mpirun, there is one rank and
// every function here is a no-op. MPI itself is touched only in ranks_mpi.cc.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <string>
#include <thread>
#include <vector>

namespace kvfold {

// Starts MPI when mpirun started this process (its environment says so); else one rank.
void StartRanks(int* argc, char*** argv);
// Ends MPI after a successful run (every rank must call it).
void StopRanks();

bool MpiBuilt();       // this kvfold was built with MPI
int Rank();            // 0 .. RankCount() - 1
int RankCount();       // 1 without mpirun
int LocalRank();       // rank among the processes on this machine (picks its GPU)
int LocalRankCount();  // ranks on this machine (they share its cores)
inline bool IsFirstRank() { return Rank() == 0; }

// This machine's cores, at least 1 (what --threads 0 uses, shared by the ranks on it).
inline int CpuCores() {
  return static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
}
// The CPU threads of this rank for --threads `requested`: N means N; 0 means every core, shared
// by the ranks on this machine.
inline int ThreadsPerRank(int requested) {
  return requested > 0 ? requested : std::max(1, CpuCores() / LocalRankCount());
}

// Whether this rank takes item `index` of a list every rank builds alike (index mod N == rank).
inline bool OwnsItem(std::size_t index) {
  return index % static_cast<std::size_t>(RankCount()) == static_cast<std::size_t>(Rank());
}

// Ends every rank after `line` (printed by this rank, on stderr): MPI_Abort with exit status
// `status`, or exit(status) with one rank.
[[noreturn]] void AbortRanks(const std::string& line, int status);

// Joins every rank's `local` bytes in rank order on rank 0 — joined = local_0, then
// joined = join(joined, local_r) for r = 1 .. N-1 — and returns `joined` on every rank.
// Collective: every rank calls it at the same point. With one rank, returns `local`.
std::string JoinInRankOrder(
    std::string local,
    const std::function<std::string(std::string joined, const std::string& next)>& join);

// Element-wise sum over ranks of values each rank sets for the items it owns and leaves 0
// elsewhere: x + 0 == x exactly, so the sum equals the one-rank values bit for bit.
void SumOwnedItems(std::vector<double>& values);

// The first rank returns once every other rank got here (it waits before it makes its output
// visible, so that a rank lost on the way leaves none); the others return at once, as they may
// have nothing left to do while the first writes.
void WaitForAllRanks();

// Bytes this rank has sent to JoinInRankOrder so far (sizes a cluster: docs/mpi.md).
std::uint64_t BytesJoined();

// --rank-timeout: how long a rank waits at a meeting point (the input check, a join, the end)
// before it ends the run with an error naming the ranks that did not come. Rank 0 waits
// `seconds` for the others; they wait twice as long for rank 0, so that rank 0, which hears from
// every rank, names the missing one first. 0 waits forever.
constexpr double kDefaultRankTimeoutSeconds = 600;
void SetRankTimeout(double seconds);

// One input every rank must have alike (RequireSameOnEveryRank).
struct RankInput {
  std::string what;   // an option ("--passes") or what a file is ("calibration file")
  std::string value;  // what is compared: the option's canonical text, or the file's SHA-256
  std::string path;   // a file: its path on this rank (named in the error); else empty
};

// Collective, before a run's first window: rank 0 gathers every rank's `inputs` and compares
// them with its own (paths aside). The lowest rank whose inputs differ throws Error naming the
// first difference ("--passes differs from rank 0's (A here, B on rank 0)", or "<path>: its
// SHA-256 differs from rank 0's calibration file <path>"); the other ranks wait for it to end the
// run (AbortRanks), and throw after the rank timeout if it did not. No-op with one rank.
void RequireSameOnEveryRank(const std::vector<RankInput>& inputs);

}  // namespace kvfold
