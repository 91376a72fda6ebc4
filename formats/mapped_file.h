// MappedFile: a read-only memory map of a whole file, so large checkpoints are paged in on
// demand instead of being copied into the heap.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

namespace kvfold {

class MappedRegionGuard;

// A file that shrinks while mapped raises SIGBUS on access; the mapping is registered so that
// kvfold's handler (formats/fatal_signals.h) names the file instead of crashing.
class MappedFile {
 public:
  // Maps `path` read-only; throws Error naming the path when it cannot be opened or mapped.
  explicit MappedFile(const std::string& path);
  ~MappedFile();
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;

  const std::uint8_t* data() const { return data_; }
  std::size_t size() const { return size_; }
  const std::string& path() const { return path_; }
  std::string_view bytes() const { return {reinterpret_cast<const char*>(data_), size_}; }

 private:
  std::string path_;
  const std::uint8_t* data_ = nullptr;
  std::size_t size_ = 0;
  std::unique_ptr<MappedRegionGuard> guard_;
};

// Drops the pages of `bytes`, which must lie inside a live MappedFile, from this process's
// resident set (madvise MADV_DONTNEED). The mapping is read-only and file-backed, so nothing is
// lost: a later read faults the pages back in from the file (or the page cache). Streaming
// readers call it once a tensor has been converted or written, so RSS tracks one layer, not
// every byte the run has touched. The range is widened to whole pages; neighbours are re-read.
void ReleaseMappedPages(std::string_view bytes);

// Throws Error naming `path` unless it is a regular file (a folder, FIFO or device is refused
// before it is opened for reading: reading /dev/zero or a FIFO never ends).
void RequireRegularFile(const std::string& path);

// Reads a whole (small) regular file into a string; throws Error naming the path on failure.
std::string ReadFileToString(const std::string& path);

}  // namespace kvfold
