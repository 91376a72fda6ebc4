#include "formats/fatal_signals.h"

#include <dirent.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <atomic>
#include <cstdint>
#include <cstring>

#include "formats/error.h"

namespace kvfold {
namespace {

constexpr std::size_t kPathBytes = 4096;

// A slot is claimed (0 -> 1) by one thread, filled, then published (1 -> 2); the handler reads
// only published slots.
struct PathSlot {
  std::atomic<int> state{0};
  char path[kPathBytes];
};
struct RegionSlot {
  std::atomic<int> state{0};
  std::uintptr_t begin = 0, end = 0;
  char path[kPathBytes];
};

PathSlot g_paths[32];
RegionSlot
    g_regions[1024];  // one per mapped file; the largest published checkpoints have ~200 shards

// The slot now holding `path`, or -1 when every slot is taken or the path does not fit.
template <typename Slot, std::size_t N>
int Claim(Slot (&slots)[N], const std::string& path) {
  if (path.size() >= kPathBytes) return -1;
  for (std::size_t i = 0; i < N; ++i) {
    int expected = 0;
    if (slots[i].state.compare_exchange_strong(expected, 1)) {
      std::memcpy(slots[i].path, path.c_str(), path.size() + 1);
      return static_cast<int>(i);
    }
  }
  return -1;
}

void WriteAll(const char* s) {
  std::size_t n = std::strlen(s);
  while (n > 0) {
    const ssize_t w = ::write(STDERR_FILENO, s, n);
    if (w <= 0) return;
    s += w;
    n -= static_cast<std::size_t>(w);
  }
}

// Removes `name` under `dir_fd` with system calls only; folders are emptied first (depth-limited:
// kvfold's staging folders are flat).
void RemoveAt(int dir_fd, const char* name, int depth) {
  if (::unlinkat(dir_fd, name, 0) == 0 || depth > 4) return;
  const int fd = ::openat(dir_fd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
  if (fd < 0) return;
  alignas(8) char buf[4096];
  for (;;) {
    const long n = ::syscall(SYS_getdents64, fd, buf, sizeof buf);
    if (n <= 0) break;
    for (long off = 0; off < n;) {
      const auto* d = reinterpret_cast<const struct dirent64*>(buf + off);
      off += d->d_reclen;
      if (std::strcmp(d->d_name, ".") == 0 || std::strcmp(d->d_name, "..") == 0) continue;
      RemoveAt(fd, d->d_name, depth + 1);
    }
  }
  ::close(fd);
  ::unlinkat(dir_fd, name, AT_REMOVEDIR);
}

// Other threads run on while the handler does: the output's writer (converter/passes/
// write_behind.h) may create a shard in a folder being emptied, so a path still there is
// removed again.
void RemoveRegisteredPaths() {
  for (auto& slot : g_paths) {
    if (slot.state.load() != 2) continue;
    struct stat st;
    for (int attempt = 0; attempt < 8 && ::lstat(slot.path, &st) == 0; ++attempt)
      RemoveAt(AT_FDCWD, slot.path, 0);
  }
}

void OnFatalSignal(int sig, siginfo_t* info, void*) {
  if (sig == SIGBUS) {
    const auto addr = reinterpret_cast<std::uintptr_t>(info ? info->si_addr : nullptr);
    const char* path = nullptr;
    for (auto& r : g_regions) {
      if (r.state.load() == 2 && addr >= r.begin && addr < r.end) path = r.path;
    }
    WriteAll("kvfold: error: ");
    WriteAll(path ? path : "(unknown file)");
    WriteAll(": changed or truncated while kvfold was reading it (SIGBUS)\n");
    RemoveRegisteredPaths();
    ::_exit(1);
  }
  WriteAll(sig == SIGINT ? "kvfold: interrupted (SIGINT)" : "kvfold: terminated (SIGTERM)");
  WriteAll("; partial output removed\n");
  RemoveRegisteredPaths();
  ::_exit(128 + sig);
}

}  // namespace

void InstallFatalSignalHandlers() {
  struct sigaction sa {};
  sa.sa_sigaction = &OnFatalSignal;
  sa.sa_flags = SA_SIGINFO;
  sigfillset(&sa.sa_mask);  // one handler at a time
  for (int sig : {SIGINT, SIGTERM, SIGBUS}) ::sigaction(sig, &sa, nullptr);
}

RemoveOnFatalSignal::RemoveOnFatalSignal(const std::string& path) : slot_(Claim(g_paths, path)) {
  if (slot_ < 0) Fail(path, "cannot register for clean-up (path too long or too many at once)");
  g_paths[slot_].state.store(2);
}

RemoveOnFatalSignal::~RemoveOnFatalSignal() { g_paths[slot_].state.store(0); }

// Without a slot (over 1024 files mapped), a SIGBUS is still reported, as "(unknown file)".
MappedRegionGuard::MappedRegionGuard(const void* data, std::size_t size, const std::string& path)
    : slot_(Claim(g_regions, path)) {
  if (slot_ < 0) return;
  g_regions[slot_].begin = reinterpret_cast<std::uintptr_t>(data);
  g_regions[slot_].end = g_regions[slot_].begin + size;
  g_regions[slot_].state.store(2);
}

MappedRegionGuard::~MappedRegionGuard() {
  if (slot_ >= 0) g_regions[slot_].state.store(0);
}

}  // namespace kvfold
