#include "runtime_check/hidden_state_store.h"

#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <string>

#include "formats/error.h"
#include "formats/positioned_io.h"

namespace kvfold {
namespace {

std::uint64_t Bytes(const at::Tensor& x) {
  return static_cast<std::uint64_t>(x.numel()) * sizeof(float);
}

std::string SpillFolder() {
  const char* tmp = std::getenv("TMPDIR");
  return tmp != nullptr && *tmp != '\0' ? tmp : "/tmp";
}

// What an I/O error names: the spill file lives, unlinked, in this folder.
std::string SpillFileName() { return SpillFolder() + ": hidden-state spill file"; }

}  // namespace

HiddenStateStore::HiddenStateStore(std::uint64_t budget_bytes) : budget_bytes_(budget_bytes) {}

HiddenStateStore::~HiddenStateStore() {
  if (fd_ >= 0) ::close(fd_);
}

HiddenStateStore::HiddenStateStore(HiddenStateStore&& o) noexcept
    : budget_bytes_(o.budget_bytes_),
      resident_bytes_(o.resident_bytes_),
      spilled_bytes_(o.spilled_bytes_),
      batches_(std::move(o.batches_)),
      fd_(o.fd_) {
  o.fd_ = -1;
}

HiddenStateStore& HiddenStateStore::operator=(HiddenStateStore&& o) noexcept {
  if (this != &o) {
    if (fd_ >= 0) ::close(fd_);
    budget_bytes_ = o.budget_bytes_;
    resident_bytes_ = o.resident_bytes_;
    spilled_bytes_ = o.spilled_bytes_;
    batches_ = std::move(o.batches_);
    fd_ = o.fd_;
    o.fd_ = -1;
  }
  return *this;
}

void HiddenStateStore::OpenSpillFile() {
  // Unlinked at once: the file goes away with the process, however it ends.
  std::string path = SpillFolder() + "/kvfold-hidden-XXXXXX";
  fd_ = ::mkstemp(path.data());
  if (fd_ < 0)
    Fail(SpillFolder(),
         std::string("cannot create the hidden-state spill file: ") + std::strerror(errno));
  ::unlink(path.c_str());
}

void HiddenStateStore::Add(const at::Tensor& x) {
  Batch batch;
  batch.shape = x.sizes().vec();
  const std::uint64_t bytes = Bytes(x);
  if (bytes <= budget_bytes_ && resident_bytes_ + bytes <= budget_bytes_) {
    batch.resident = x;
    resident_bytes_ += bytes;
    batches_.push_back(std::move(batch));
    return;
  }
  if (fd_ < 0) OpenSpillFile();
  batch.offset = spilled_bytes_;
  spilled_bytes_ += bytes;
  batches_.push_back(std::move(batch));
  Put(batches_.size() - 1, x);
}

at::Tensor HiddenStateStore::Get(std::size_t b, const at::Device& device) const {
  const Batch& batch = batches_.at(b);
  if (batch.resident.defined()) return batch.resident;
  at::Tensor x = at::empty(batch.shape, at::TensorOptions().dtype(at::kFloat));
  ReadAt(fd_, x.data_ptr(), Bytes(x), batch.offset, SpillFileName());
  return device.is_cpu() ? x : x.to(device);
}

void HiddenStateStore::Put(std::size_t b, const at::Tensor& x) {
  Batch& batch = batches_.at(b);
  if (batch.resident.defined()) {
    batch.resident = x;
    return;
  }
  if (x.sizes().vec() != batch.shape)
    Fail("hidden states", "internal error: a batch changed shape");
  const at::Tensor host = x.to(at::kCPU, at::kFloat).contiguous();
  WriteAt(fd_, host.data_ptr(), Bytes(host), batch.offset, SpillFileName());
}

HiddenStateStore HiddenStateStore::Clone(const at::Device& device) const {
  HiddenStateStore copy(budget_bytes_);
  for (std::size_t b = 0; b < batches_.size(); ++b) copy.Add(Get(b, device).clone());
  return copy;
}

}  // namespace kvfold
