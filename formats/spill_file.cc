#include "formats/spill_file.h"

#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <utility>

#include "formats/error.h"
#include "formats/positioned_io.h"

namespace kvfold {
namespace {

std::string SpillFolder() {
  const char* tmp = std::getenv("TMPDIR");
  return tmp != nullptr && *tmp != '\0' ? tmp : "/tmp";
}

}  // namespace

SpillFile::~SpillFile() {
  if (fd_ >= 0) ::close(fd_);
}

SpillFile::SpillFile(SpillFile&& other) noexcept
    : what_(std::move(other.what_)), fd_(std::exchange(other.fd_, -1)), size_(other.size_) {}

SpillFile& SpillFile::operator=(SpillFile&& other) noexcept {
  if (this != &other) {
    if (fd_ >= 0) ::close(fd_);
    what_ = std::move(other.what_);
    fd_ = std::exchange(other.fd_, -1);
    size_ = other.size_;
  }
  return *this;
}

void SpillFile::Open() {
  std::string path = SpillFolder() + "/kvfold-spill-XXXXXX";
  fd_ = ::mkstemp(path.data());
  if (fd_ < 0) Fail(SpillFolder(), "cannot create the " + what_ + ": " + std::strerror(errno));
  ::unlink(path.c_str());  // at once: nothing is left behind, however the process ends
}

// I/O errors name the folder: the file itself has no name any more.
std::string SpillFile::Where() const { return SpillFolder() + ": " + what_; }

std::uint64_t SpillFile::Append(const void* data, std::size_t size) {
  if (fd_ < 0) Open();
  const std::uint64_t offset = size_;
  size_ += size;
  WriteAt(fd_, data, size, offset, Where());
  return offset;
}

std::uint64_t SpillFile::Reserve(std::size_t size) {
  if (fd_ < 0) Open();
  const std::uint64_t offset = size_;
  size_ += size;
  if (::ftruncate(fd_, static_cast<off_t>(size_)) != 0)
    Fail(Where(), std::string("cannot grow: ") + std::strerror(errno));
  return offset;
}

void SpillFile::Write(std::uint64_t offset, const void* data, std::size_t size) {
  if (offset + size > size_) Fail(Where(), "internal error: a write past the appended bytes");
  WriteAt(fd_, data, size, offset, Where());
}

void SpillFile::Read(std::uint64_t offset, void* data, std::size_t size) const {
  if (offset + size > size_) Fail(Where(), "internal error: a read past the appended bytes");
  ReadAt(fd_, data, size, offset, Where());
}

namespace {

// SpilledRows of collectors on different threads share one budget.
std::mutex& BudgetLock() {
  static std::mutex lock;
  return lock;
}

}  // namespace

SpilledRows::~SpilledRows() {
  const std::uint64_t bytes = static_cast<std::uint64_t>(width_) * sizeof(float);
  const std::lock_guard<std::mutex> hold(BudgetLock());
  for (const Block& b : blocks_) {
    if (!b.data.empty()) budget_->Give(bytes);
  }
}

std::int64_t SpilledRows::Append(const float* data, std::int64_t width) {
  if (width_ < 0) width_ = width;
  if (width != width_) Fail(file_.what(), "internal error: blocks of different widths");
  const std::size_t bytes = static_cast<std::size_t>(width) * sizeof(float);
  Block b;
  bool resident = false;
  if (width > 0) {
    const std::lock_guard<std::mutex> hold(BudgetLock());
    resident = budget_->Take(bytes);
  }
  if (resident) {
    b.data.assign(data, data + width);
  } else {
    b.offset = file_.Append(data, bytes);
  }
  blocks_.push_back(std::move(b));
  return count() - 1;
}

void SpilledRows::Read(std::int64_t index, float* out) const {
  if (index < 0 || index >= count()) Fail(file_.what(), "internal error: no such block");
  const Block& b = blocks_[static_cast<std::size_t>(index)];
  if (!b.data.empty() || width_ == 0) {
    std::copy(b.data.begin(), b.data.end(), out);
  } else {
    file_.Read(b.offset, out, static_cast<std::size_t>(width_) * sizeof(float));
  }
}

}  // namespace kvfold
