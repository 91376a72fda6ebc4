// One rank: the build without MPI (see ranks.h).
#include <cstdio>
#include <cstdlib>

#include "formats/ranks.h"

namespace kvfold {

// Started by mpirun with more than one process, this build would run N whole conversions side
// by side, each writing the same output: refused.
void StartRanks(int*, char***) {
  for (const char* name : {"OMPI_COMM_WORLD_SIZE", "PMI_SIZE"}) {
    const char* size = std::getenv(name);
    if (size != nullptr && std::atoi(size) > 1) {
      std::fprintf(
          stderr,
          "kvfold: error: mpirun: this kvfold was built without MPI (install libopenmpi-dev "
          "and rebuild), so it runs as one process only\n");
      std::exit(1);
    }
  }
}
void StopRanks() {}
bool MpiBuilt() { return false; }
int Rank() { return 0; }
int RankCount() { return 1; }
int LocalRank() { return 0; }
int LocalRankCount() { return 1; }

void AbortRanks(const std::string& line, int status) {
  std::fprintf(stderr, "%s\n", line.c_str());
  std::exit(status);
}

std::string JoinInRankOrder(std::string local,
                            const std::function<std::string(std::string, const std::string&)>&) {
  return local;
}

void SumOwnedItems(std::vector<double>&) {}
void WaitForAllRanks() {}

std::uint64_t BytesJoined() { return 0; }
void SetRankTimeout(double) {}
void RequireSameOnEveryRank(const std::vector<RankInput>&) {}

}  // namespace kvfold
