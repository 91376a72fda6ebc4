// Ranks over MPI (Open MPI from Debian's libopenmpi-dev); see ranks.h.
#include <mpi.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <thread>

#include "formats/error.h"
#include "formats/ranks.h"

namespace kvfold {
namespace {

struct RankState {
  bool started = false;
  int rank = 0, count = 1, local_rank = 0, local_count = 1;
  std::uint64_t bytes_joined = 0;
};

RankState& State() {
  static RankState state;
  return state;
}

// Started by mpirun (Open MPI's, or another launcher speaking PMI/PMIx): its environment has
// the job's size. Without it kvfold stays one process and never initialises MPI.
bool LaunchedByMpirun() {
  for (const char* name : {"OMPI_COMM_WORLD_SIZE", "PMIX_RANK", "PMI_SIZE"}) {
    if (std::getenv(name) != nullptr) return true;
  }
  return false;
}

// Waits for `request` without spinning: a rank that waits (rank 0 for a slower rank's share, or
// every rank while rank 0 writes) leaves the cores to the ranks that compute, which matters when
// ranks share a machine's cores.
void Wait(MPI_Request& request) {
  int done = 0;
  for (;;) {
    MPI_Test(&request, &done, MPI_STATUS_IGNORE);
    if (done) return;
    std::this_thread::sleep_for(std::chrono::microseconds(200));
  }
}

// Large buffers go in pieces: MPI counts are ints.
constexpr std::size_t kPiece = std::size_t{1} << 30;

void SendBytes(const std::string& bytes, int to) {
  std::uint64_t size = bytes.size();
  MPI_Send(&size, 1, MPI_UINT64_T, to, 0, MPI_COMM_WORLD);
  for (std::size_t at = 0; at < bytes.size(); at += kPiece) {
    const int n = static_cast<int>(std::min(kPiece, bytes.size() - at));
    MPI_Send(bytes.data() + at, n, MPI_BYTE, to, 0, MPI_COMM_WORLD);
  }
}

std::string ReceiveBytes(int from) {
  std::uint64_t size = 0;
  MPI_Request request;
  MPI_Irecv(&size, 1, MPI_UINT64_T, from, 0, MPI_COMM_WORLD, &request);
  Wait(request);
  std::string bytes(size, '\0');
  for (std::size_t at = 0; at < bytes.size(); at += kPiece) {
    const int n = static_cast<int>(std::min(kPiece, bytes.size() - at));
    MPI_Irecv(bytes.data() + at, n, MPI_BYTE, from, 0, MPI_COMM_WORLD, &request);
    Wait(request);
  }
  return bytes;
}

void BroadcastBytes(std::string& bytes) {
  std::uint64_t size = bytes.size();
  MPI_Request request;
  MPI_Ibcast(&size, 1, MPI_UINT64_T, 0, MPI_COMM_WORLD, &request);
  Wait(request);
  bytes.resize(size);
  for (std::size_t at = 0; at < bytes.size(); at += kPiece) {
    const int n = static_cast<int>(std::min(kPiece, bytes.size() - at));
    MPI_Ibcast(bytes.data() + at, n, MPI_BYTE, 0, MPI_COMM_WORLD, &request);
    Wait(request);
  }
}

}  // namespace

void StartRanks(int* argc, char*** argv) {
  RankState& s = State();
  if (s.started || !LaunchedByMpirun()) return;
  MPI_Init(argc, argv);
  s.started = true;
  MPI_Comm_rank(MPI_COMM_WORLD, &s.rank);
  MPI_Comm_size(MPI_COMM_WORLD, &s.count);
  MPI_Comm local;
  MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, s.rank, MPI_INFO_NULL, &local);
  MPI_Comm_rank(local, &s.local_rank);
  MPI_Comm_size(local, &s.local_count);
  MPI_Comm_free(&local);
}

void StopRanks() {
  RankState& s = State();
  if (!s.started) return;
  MPI_Finalize();
  s.started = false;
}

bool MpiBuilt() { return true; }
int Rank() { return State().rank; }
int RankCount() { return State().count; }
int LocalRank() { return State().local_rank; }
int LocalRankCount() { return State().local_count; }

void AbortRanks(const std::string& line, int status) {
  std::fprintf(stderr, "%s\n", line.c_str());
  std::fflush(stderr);
  if (State().started && State().count > 1) MPI_Abort(MPI_COMM_WORLD, status);
  StopRanks();
  std::exit(status);
}

std::string JoinInRankOrder(
    std::string local, const std::function<std::string(std::string, const std::string&)>& join) {
  RankState& s = State();
  if (s.count == 1) return local;
  s.bytes_joined += local.size();
  if (s.rank != 0) {
    SendBytes(local, 0);
    local.clear();
  } else {
    for (int r = 1; r < s.count; ++r) local = join(std::move(local), ReceiveBytes(r));
  }
  BroadcastBytes(local);
  return local;
}

void SumOwnedItems(std::vector<double>& values) {
  if (State().count == 1) return;
  // Every element is non-zero on at most one rank, so the order MPI sums in cannot matter.
  MPI_Request request;
  MPI_Iallreduce(MPI_IN_PLACE, values.data(), static_cast<int>(values.size()), MPI_DOUBLE, MPI_SUM,
                 MPI_COMM_WORLD, &request);
  Wait(request);
}

void WaitForAllRanks() {
  if (State().count == 1) return;
  MPI_Request request;
  MPI_Ibarrier(MPI_COMM_WORLD, &request);
  Wait(request);
}

std::uint64_t BytesJoined() { return State().bytes_joined; }

}  // namespace kvfold
