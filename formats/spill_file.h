// A temporary file for bytes a run has no memory budget for (hidden states above
// --hidden-memory, refit contexts): created unlinked in $TMPDIR (else /tmp) on the first write,
// so it goes away with the process however it ends. Not copyable; I/O errors name the folder.
// MemoryBudget decides what stays in memory.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

namespace kvfold {

class SpillFile {
 public:
  // `what` names the contents in errors ("hidden-state spill file").
  explicit SpillFile(std::string what) : what_(std::move(what)) {}
  ~SpillFile();
  SpillFile(SpillFile&& other) noexcept;
  SpillFile& operator=(SpillFile&& other) noexcept;
  SpillFile(const SpillFile&) = delete;
  SpillFile& operator=(const SpillFile&) = delete;

  // Writes `size` bytes after everything appended so far; returns their offset.
  std::uint64_t Append(const void* data, std::size_t size);
  // Room for `size` bytes after everything appended so far, to be filled by Write; returns
  // their offset.
  std::uint64_t Reserve(std::size_t size);
  void Write(std::uint64_t offset, const void* data, std::size_t size);
  void Read(std::uint64_t offset, void* data, std::size_t size) const;
  std::uint64_t size() const { return size_; }  // bytes appended
  const std::string& what() const { return what_; }

 private:
  void Open();
  std::string Where() const;
  std::string what_;
  int fd_ = -1;
  std::uint64_t size_ = 0;
};

// The bytes a store may keep in memory before the rest go to its SpillFile: Take says whether a
// block still fits (and counts it), Give hands one back.
class MemoryBudget {
 public:
  explicit MemoryBudget(std::uint64_t limit) : limit_(limit) {}
  bool Take(std::uint64_t bytes) {
    if (bytes > limit_ || used_ + bytes > limit_) return false;  // the first test: no overflow
    used_ += bytes;
    return true;
  }
  void Give(std::uint64_t bytes) { used_ -= bytes; }
  std::uint64_t limit() const { return limit_; }
  std::uint64_t used() const { return used_; }

 private:
  std::uint64_t limit_, used_ = 0;
};

// Blocks of `width` floats appended one by one (heal's captured windows): each stays in memory
// while `budget` (shared by the stores that split one allowance, on any threads: its use is
// locked) has room, the rest go to a SpillFile. Reads give the same floats either way. Gives its
// bytes back to the budget when destroyed.
class SpilledRows {
 public:
  SpilledRows(std::shared_ptr<MemoryBudget> budget, std::string what)
      : budget_(std::move(budget)), file_(std::move(what)) {}
  ~SpilledRows();
  SpilledRows(const SpilledRows&) = delete;
  SpilledRows& operator=(const SpilledRows&) = delete;

  // Appends one block; every block has the width of the first. Returns its index.
  std::int64_t Append(const float* data, std::int64_t width);
  void Read(std::int64_t index, float* out) const;  // `width()` floats
  std::int64_t count() const { return static_cast<std::int64_t>(blocks_.size()); }
  std::int64_t width() const { return width_; }

 private:
  struct Block {
    std::vector<float> data;  // empty when spilled
    std::uint64_t offset = 0;
  };
  std::shared_ptr<MemoryBudget> budget_;
  SpillFile file_;
  std::int64_t width_ = -1;
  std::vector<Block> blocks_;
};

}  // namespace kvfold
