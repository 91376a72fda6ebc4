// Fatal signals: what kvfold leaves behind when it is interrupted or its input vanishes.
//
// SIGINT and SIGTERM remove every registered temporary path (staging folders, temporary
// files) and exit with 128 + the signal (130, 143). SIGBUS, raised when a memory-mapped input
// shrinks while it is read, is reported as a one-line error naming that file, then handled the
// same way (exit 1). The handler only makes system calls: registration copies paths into fixed
// slots up front, so nothing is allocated when a signal arrives.
#pragma once

#include <cstddef>
#include <string>

namespace kvfold {

// Installs the handlers once; the kvfold executable calls it before any work. Safe to call
// again. Libraries and tests that never call it keep the default signal behaviour.
void InstallFatalSignalHandlers();

// While alive, `path` (a file or a folder with its contents) is removed if a fatal signal
// arrives. Throws Error when every slot is taken.
class RemoveOnFatalSignal {
 public:
  explicit RemoveOnFatalSignal(const std::string& path);
  ~RemoveOnFatalSignal();
  RemoveOnFatalSignal(const RemoveOnFatalSignal&) = delete;
  RemoveOnFatalSignal& operator=(const RemoveOnFatalSignal&) = delete;

 private:
  int slot_;
};

// While alive, a SIGBUS inside [data, data + size) is reported as an error about `path`.
class MappedRegionGuard {
 public:
  MappedRegionGuard(const void* data, std::size_t size, const std::string& path);
  ~MappedRegionGuard();
  MappedRegionGuard(const MappedRegionGuard&) = delete;
  MappedRegionGuard& operator=(const MappedRegionGuard&) = delete;

 private:
  int slot_;
};

}  // namespace kvfold
