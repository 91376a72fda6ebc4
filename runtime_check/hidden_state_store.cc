#include "runtime_check/hidden_state_store.h"

#include "formats/error.h"

namespace kvfold {
namespace {

std::uint64_t Bytes(const at::Tensor& x) {
  return static_cast<std::uint64_t>(x.numel()) * sizeof(float);
}

std::uint64_t Bytes(const std::vector<std::int64_t>& shape) {
  std::uint64_t n = sizeof(float);
  for (const std::int64_t s : shape) n *= static_cast<std::uint64_t>(s);
  return n;
}

}  // namespace

HiddenStateStore::HiddenStateStore(std::uint64_t budget_bytes) : budget_(budget_bytes) {}

void HiddenStateStore::Add(const at::Tensor& x) {
  Batch batch;
  batch.shape = x.sizes().vec();
  if (budget_.Take(Bytes(x))) {
    batch.resident = x;
    batches_.push_back(std::move(batch));
    return;
  }
  const at::Tensor host = x.to(at::kCPU, at::kFloat).contiguous();
  batch.offset = spill_.Append(host.data_ptr(), Bytes(host));
  batch.spilled = true;
  batches_.push_back(std::move(batch));
}

void HiddenStateStore::Reserve(const std::vector<std::int64_t>& shape) {
  Batch batch;
  batch.shape = shape;
  if (!budget_.Take(Bytes(shape))) {
    batch.offset = spill_.Reserve(Bytes(shape));
    batch.spilled = true;
  }
  batches_.push_back(std::move(batch));
}

at::Tensor HiddenStateStore::Get(std::size_t b, const at::Device& device) const {
  const Batch& batch = batches_.at(b);
  if (!batch.spilled) {
    if (!batch.resident.defined()) Fail("hidden states", "internal error: a batch read unput");
    return batch.resident;
  }
  at::Tensor x = at::empty(batch.shape, at::TensorOptions().dtype(at::kFloat));
  spill_.Read(batch.offset, x.data_ptr(), Bytes(x));
  return device.is_cpu() ? x : x.to(device);
}

void HiddenStateStore::Put(std::size_t b, const at::Tensor& x) {
  Batch& batch = batches_.at(b);
  if (!batch.spilled) {
    batch.resident = x;
    return;
  }
  if (x.sizes().vec() != batch.shape)
    Fail("hidden states", "internal error: a batch changed shape");
  const at::Tensor host = x.to(at::kCPU, at::kFloat).contiguous();
  spill_.Write(batch.offset, host.data_ptr(), Bytes(host));
}

HiddenStateStore HiddenStateStore::Clone(const at::Device& device) const {
  HiddenStateStore copy(budget_.limit());
  for (std::size_t b = 0; b < batches_.size(); ++b) copy.Add(Get(b, device).clone());
  return copy;
}

}  // namespace kvfold
