#include "runtime_check/hidden_state_store.h"

#include "formats/error.h"

namespace kvfold {
namespace {

std::uint64_t Bytes(const at::Tensor& x) {
  return static_cast<std::uint64_t>(x.numel()) * sizeof(float);
}

}  // namespace

HiddenStateStore::HiddenStateStore(std::uint64_t budget_bytes) : budget_bytes_(budget_bytes) {}

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
  const at::Tensor host = x.to(at::kCPU, at::kFloat).contiguous();
  batch.offset = spill_.Append(host.data_ptr(), Bytes(host));
  batches_.push_back(std::move(batch));
}

at::Tensor HiddenStateStore::Get(std::size_t b, const at::Device& device) const {
  const Batch& batch = batches_.at(b);
  if (batch.resident.defined()) return batch.resident;
  at::Tensor x = at::empty(batch.shape, at::TensorOptions().dtype(at::kFloat));
  spill_.Read(batch.offset, x.data_ptr(), Bytes(x));
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
  spill_.Write(batch.offset, host.data_ptr(), Bytes(host));
}

HiddenStateStore HiddenStateStore::Clone(const at::Device& device) const {
  HiddenStateStore copy(budget_bytes_);
  for (std::size_t b = 0; b < batches_.size(); ++b) copy.Add(Get(b, device).clone());
  return copy;
}

}  // namespace kvfold
