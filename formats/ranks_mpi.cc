// Ranks over MPI (Open MPI from Debian's libopenmpi-dev); see ranks.h.
//
// Every exchange is point to point with rank 0 (which therefore knows who is missing), and every
// wait polls nonblocking requests with MPI_Test and a short sleep, bounded by the rank timeout:
// a rank that is stopped, hung or lost ends the run with an error naming it, instead of holding
// the others forever.
#include <mpi.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <thread>

#include "formats/error.h"
#include "formats/ranks.h"

namespace kvfold {
namespace {

using Clock = std::chrono::steady_clock;

struct RankState {
  bool started = false;
  int rank = 0, count = 1, local_rank = 0, local_count = 1;
  std::uint64_t bytes_joined = 0;
  double timeout = kDefaultRankTimeoutSeconds;
};

RankState& State() {
  static RankState state;
  return state;
}

// Each exchange has its tag, so that ranks at different meeting points never take each other's
// messages: rank 0 then waits for a message that does not come, and names the rank.
enum Tag : int { kJoin = 1, kJoined, kArrived, kInputs, kVerdict };

// Started by mpirun (Open MPI's, or another launcher speaking PMI/PMIx): its environment has
// the job's size. Without it kvfold stays one process and never initialises MPI.
bool LaunchedByMpirun() {
  for (const char* name : {"OMPI_COMM_WORLD_SIZE", "PMIX_RANK", "PMI_SIZE"}) {
    if (std::getenv(name) != nullptr) return true;
  }
  return false;
}

double Since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

// Seconds this rank waits for another (ranks.h): 0 is forever.
double Patience() {
  const RankState& s = State();
  return s.rank == 0 ? s.timeout : 2 * s.timeout;
}

std::string RankName(int rank) {
  return "rank " + std::to_string(rank) + " of " + std::to_string(State().count);
}

// "rank 1 of 4 did not reach <point> within 5 s (--rank-timeout)", or "ranks 1, 3 of 4 ...".
[[noreturn]] void Late(const std::vector<int>& ranks, const char* point) {
  std::string who = ranks.size() == 1 ? "rank " : "ranks ";
  for (std::size_t i = 0; i < ranks.size(); ++i)
    who += (i > 0 ? ", " : "") + std::to_string(ranks[i]);
  char seconds[32];
  std::snprintf(seconds, sizeof seconds, "%g", Patience());
  Fail("", who + " of " + std::to_string(State().count) + " did not reach " + point + " within " +
               seconds + " s (--rank-timeout)");
}

// Waits for every request, request i being an exchange with rank peers[i], without spinning: a
// waiting rank leaves the cores to the ranks that compute, which matters when ranks share a
// machine's cores. After the rank timeout, throws Error naming the ranks still awaited.
void Await(std::vector<MPI_Request>& requests, const std::vector<int>& peers, const char* point) {
  const auto start = Clock::now();
  for (;;) {
    std::vector<int> late;
    for (std::size_t i = 0; i < requests.size(); ++i) {
      int done = 0;
      MPI_Test(&requests[i], &done, MPI_STATUS_IGNORE);  // a finished one is MPI_REQUEST_NULL
      if (!done) late.push_back(peers[i]);
    }
    if (late.empty()) return;
    if (Patience() > 0 && Since(start) > Patience()) {
      for (MPI_Request& r : requests) {
        if (r != MPI_REQUEST_NULL) MPI_Request_free(&r);  // the run ends: never completed
      }
      Late(late, point);
    }
    std::this_thread::sleep_for(std::chrono::microseconds(200));
  }
}

void Await(MPI_Request& request, int peer, const char* point) {
  std::vector<MPI_Request> requests = {request};
  Await(requests, {peer}, point);
}

// Large buffers go in pieces: MPI counts are ints.
constexpr std::size_t kPiece = std::size_t{1} << 30;

int PieceSize(const std::string& bytes, std::size_t at) {
  return static_cast<int>(std::min(kPiece, bytes.size() - at));
}

void SendBytes(const std::string& bytes, int to, int tag, const char* point) {
  std::uint64_t size = bytes.size();
  MPI_Request request;
  MPI_Isend(&size, 1, MPI_UINT64_T, to, tag, MPI_COMM_WORLD, &request);
  Await(request, to, point);
  for (std::size_t at = 0; at < bytes.size(); at += kPiece) {
    MPI_Isend(bytes.data() + at, PieceSize(bytes, at), MPI_BYTE, to, tag, MPI_COMM_WORLD, &request);
    Await(request, to, point);
  }
}

std::string ReceiveBytes(int from, int tag, const char* point) {
  std::uint64_t size = 0;
  MPI_Request request;
  MPI_Irecv(&size, 1, MPI_UINT64_T, from, tag, MPI_COMM_WORLD, &request);
  Await(request, from, point);
  std::string bytes(size, '\0');
  for (std::size_t at = 0; at < bytes.size(); at += kPiece) {
    MPI_Irecv(bytes.data() + at, PieceSize(bytes, at), MPI_BYTE, from, tag, MPI_COMM_WORLD,
              &request);
    Await(request, from, point);
  }
  return bytes;
}

// Rank 0 sends `bytes` to every other rank at once; the others receive them into `bytes`.
void BroadcastBytes(std::string& bytes, int tag, const char* point) {
  const RankState& s = State();
  if (s.rank != 0) {
    bytes = ReceiveBytes(0, tag, point);
    return;
  }
  std::uint64_t size = bytes.size();
  std::vector<int> peers;
  for (int r = 1; r < s.count; ++r) peers.push_back(r);
  std::vector<MPI_Request> requests(peers.size());
  for (std::size_t i = 0; i < peers.size(); ++i)
    MPI_Isend(&size, 1, MPI_UINT64_T, peers[i], tag, MPI_COMM_WORLD, &requests[i]);
  Await(requests, peers, point);
  for (std::size_t at = 0; at < bytes.size(); at += kPiece) {
    for (std::size_t i = 0; i < peers.size(); ++i) {
      MPI_Isend(bytes.data() + at, PieceSize(bytes, at), MPI_BYTE, peers[i], tag, MPI_COMM_WORLD,
                &requests[i]);
    }
    Await(requests, peers, point);
  }
}

// JoinInRankOrder without the byte count.
std::string JoinBytes(std::string local,
                      const std::function<std::string(std::string, const std::string&)>& join,
                      const char* point) {
  const RankState& s = State();
  if (s.rank != 0) {
    SendBytes(local, 0, kJoin, point);
    local.clear();
  } else {
    for (int r = 1; r < s.count; ++r) local = join(std::move(local), ReceiveBytes(r, kJoin, point));
  }
  BroadcastBytes(local, kJoined, point);
  return local;
}

// RankInput lists as bytes: each field as its length (8 bytes) and its bytes.
void PackField(std::string& out, const std::string& field) {
  const std::uint64_t n = field.size();
  out.append(reinterpret_cast<const char*>(&n), sizeof n).append(field);
}

std::string Pack(const std::vector<RankInput>& inputs) {
  std::string out;
  for (const RankInput& in : inputs) {
    for (const std::string* field : {&in.what, &in.value, &in.path}) PackField(out, *field);
  }
  return out;
}

std::vector<RankInput> Unpack(const std::string& bytes) {
  std::vector<RankInput> inputs;
  std::size_t at = 0;
  auto field = [&] {
    std::uint64_t n = 0;
    std::memcpy(&n, bytes.data() + at, sizeof n);
    at += sizeof n;
    std::string f = bytes.substr(at, n);
    at += n;
    return f;
  };
  while (at + sizeof(std::uint64_t) <= bytes.size()) {
    RankInput in;
    in.what = field();
    in.value = field();
    in.path = field();
    inputs.push_back(std::move(in));
  }
  return inputs;
}

// The first input where `here` and `first` (rank 0's) differ, paths aside; -1 when none does.
int FirstDifference(const std::vector<RankInput>& here, const std::vector<RankInput>& first) {
  const std::size_t n = std::max(here.size(), first.size());
  for (std::size_t i = 0; i < n; ++i) {
    if (i >= here.size() || i >= first.size() || here[i].what != first[i].what ||
        here[i].value != first[i].value)
      return static_cast<int>(i);
  }
  return -1;
}

// An input as the error shows it: a file by its path, an option by its value.
std::string Shown(const RankInput& in) {
  std::string s = !in.path.empty() ? in.path : in.value.empty() ? "none" : in.value;
  return s.size() > 160 ? s.substr(0, 160) + "..." : s;
}

// The error line's problem: how this rank's inputs differ from rank 0's.
std::string Difference(const std::vector<RankInput>& here, const std::vector<RankInput>& first) {
  const auto i = static_cast<std::size_t>(FirstDifference(here, first));
  if (i >= here.size() || i >= first.size() || here[i].what != first[i].what) {
    const std::string mine = i < here.size() ? here[i].what : "nothing";
    const std::string theirs = i < first.size() ? first[i].what : "nothing";
    return "its command line differs from rank 0's (" + mine + " here, " + theirs + " on rank 0)";
  }
  const RankInput &a = here[i], &b = first[i];
  if (!a.path.empty() && !b.path.empty())
    return a.path + ": its SHA-256 differs from rank 0's " + a.what + " " + b.path;
  return a.what + " differs from rank 0's (" + Shown(a) + " here, " + Shown(b) + " on rank 0)";
}

// Rank 0's verdict: the lowest rank whose inputs differ from its own (-1: none), then its inputs.
std::string Verdict(const std::string& mine) {
  const std::vector<RankInput> first = Unpack(mine);
  int differing = -1;
  for (int r = 1; r < State().count; ++r) {
    const std::string theirs = ReceiveBytes(r, kInputs, "the input check");
    if (differing < 0 && FirstDifference(Unpack(theirs), first) >= 0) differing = r;
  }
  return std::to_string(differing) + '\n' + mine;
}

// A rank whose inputs are alike, once `differing` was found: that rank ends the run (AbortRanks,
// which ends this one too); if it has not after the rank timeout, this rank does.
[[noreturn]] void AwaitEnd(int differing) {
  const auto start = Clock::now();
  while (Patience() == 0 || Since(start) < Patience())
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  Fail("", RankName(differing) + ": its inputs differ from rank 0's, and it did not end the run");
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
  return JoinBytes(std::move(local), join, "the join of statistics");
}

void SumOwnedItems(std::vector<double>& values) {
  if (State().count == 1) return;
  const std::size_t size = values.size() * sizeof(double);
  std::string bytes(reinterpret_cast<const char*>(values.data()), size);
  // Every element is non-zero on at most one rank, so the order of the sums cannot matter.
  bytes = JoinBytes(
      std::move(bytes),
      [](std::string sum, const std::string& next) {
        if (next.size() != sum.size()) Fail("ranks", "evaluated different numbers of windows");
        for (std::size_t at = 0; at < sum.size(); at += sizeof(double)) {
          double a, b;
          std::memcpy(&a, sum.data() + at, sizeof a);
          std::memcpy(&b, next.data() + at, sizeof b);
          a += b;
          std::memcpy(sum.data() + at, &a, sizeof a);
        }
        return sum;
      },
      "the sum of the evaluation");
  std::memcpy(values.data(), bytes.data(), std::min(size, bytes.size()));
}

void WaitForAllRanks() {
  const RankState& s = State();
  if (s.count == 1) return;
  const char* point = "the end of the run";
  char arrived = 1;
  if (s.rank != 0) {
    MPI_Request request;
    MPI_Isend(&arrived, 1, MPI_CHAR, 0, kArrived, MPI_COMM_WORLD, &request);
    Await(request, 0, point);
    return;
  }
  std::vector<char> flags(static_cast<std::size_t>(s.count));
  std::vector<int> peers;
  for (int r = 1; r < s.count; ++r) peers.push_back(r);
  std::vector<MPI_Request> requests(peers.size());
  for (std::size_t i = 0; i < peers.size(); ++i) {
    MPI_Irecv(&flags[static_cast<std::size_t>(peers[i])], 1, MPI_CHAR, peers[i], kArrived,
              MPI_COMM_WORLD, &requests[i]);
  }
  Await(requests, peers, point);
}

std::uint64_t BytesJoined() { return State().bytes_joined; }

void SetRankTimeout(double seconds) { State().timeout = seconds; }

void RequireSameOnEveryRank(const std::vector<RankInput>& inputs) {
  const RankState& s = State();
  if (s.count == 1) return;
  const std::string mine = Pack(inputs);
  std::string verdict;
  if (s.rank == 0) {
    verdict = Verdict(mine);
  } else {
    SendBytes(mine, 0, kInputs, "the input check");
  }
  BroadcastBytes(verdict, kVerdict, "the input check");
  const std::size_t newline = verdict.find('\n');
  const int differing = std::atoi(verdict.substr(0, newline).c_str());
  if (differing < 0) return;
  if (differing == s.rank) Fail("", Difference(inputs, Unpack(verdict.substr(newline + 1))));
  AwaitEnd(differing);
}

}  // namespace kvfold
