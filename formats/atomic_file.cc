#include "formats/atomic_file.h"

#include <fcntl.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstring>

#include "formats/error.h"
#include "formats/fatal_signals.h"
#include "formats/positioned_io.h"

namespace kvfold {
namespace {
std::atomic<unsigned> g_tmp_counter{0};
constexpr std::uint64_t kWritebackChunk = std::uint64_t{64} << 20;
}  // namespace

AtomicFile::AtomicFile(std::string path) : path_(std::move(path)) {
  tmp_path_ = path_ + ".tmp." + std::to_string(::getpid()) + "." +
              std::to_string(g_tmp_counter.fetch_add(1));
  file_ = std::fopen(tmp_path_.c_str(), "wb");
  if (file_ == nullptr) Fail(path_, std::string("cannot write: ") + std::strerror(errno));
  try {
    cleanup_ = std::make_unique<RemoveOnFatalSignal>(tmp_path_);
  } catch (const Error&) {
    // Every slot taken: files inside a staging folder are removed with it all the same.
  }
}

AtomicFile::~AtomicFile() {
  if (file_ != nullptr) std::fclose(file_);
  if (!committed_) std::remove(tmp_path_.c_str());
  cleanup_.reset();
}

void AtomicFile::Write(const void* data, std::size_t size) {
  if (size == 0) return;
  if (std::fwrite(data, 1, size, file_) != size) {
    Fail(path_, std::string("write failed: ") + std::strerror(errno));
  }
  written_ += size;
  if (written_ - written_back_ < kWritebackChunk) return;
  Flush();
  // A hint: a file system without it, or a failed write-back, is left to Commit()'s fsync.
  ::sync_file_range(fileno(file_), static_cast<off_t>(written_back_),
                    static_cast<off_t>(written_ - written_back_), SYNC_FILE_RANGE_WRITE);
  written_back_ = written_;
}

void AtomicFile::Flush() {
  if (std::fflush(file_) != 0) Fail(path_, std::string("write failed: ") + std::strerror(errno));
}

void AtomicFile::Overwrite(std::uint64_t offset, const void* data, std::size_t size) {
  Flush();
  WriteAt(fileno(file_), data, size, offset, path_);
}

void AtomicFile::Commit() {
  if (std::fflush(file_) != 0 || ::fsync(fileno(file_)) != 0) {
    Fail(path_, std::string("write failed: ") + std::strerror(errno));
  }
  int rc = std::fclose(file_);
  file_ = nullptr;
  if (rc != 0) Fail(path_, std::string("write failed: ") + std::strerror(errno));
  if (std::rename(tmp_path_.c_str(), path_.c_str()) != 0) {
    Fail(path_, std::string("cannot rename into place: ") + std::strerror(errno));
  }
  committed_ = true;
  cleanup_.reset();  // the final file is not ours to remove
}

void AtomicFile::CommitAs(std::string path) {
  path_ = std::move(path);
  Commit();
}

void WriteFileAtomically(const std::string& path, std::string_view contents) {
  AtomicFile out(path);
  out.Write(contents);
  out.Commit();
}

}  // namespace kvfold
