#include "runtime_check/tensor_cache.h"

#include <c10/core/CPUAllocator.h>

#include <cstdlib>
#include <map>
#include <mutex>
#include <new>
#include <vector>

#include "formats/heap_policy.h"

namespace kvfold {
namespace {

// Each buffer is preceded by a header holding its size; data stays 64-byte aligned, as
// LibTorch's own allocator gives it.
constexpr std::size_t kHeader = 64;

// A size not freed or reused over this many boundaries is dropped. One model layer passes up to
// three (the source's stepper, the converted model's, heal's training); with one, the converted
// stepper's boundary dropped the source's buffers and a 64-layer conversion kept 70% of the page
// faults it had with no cache (docs/results.md, "The tensor cache").
constexpr std::int64_t kStaleBoundaries = 4;

// The kept buffers of one size, and the boundary count when that size was last freed or reused.
struct Bucket {
  std::vector<void*> buffers;
  std::int64_t last_boundary = 0;
};

struct Cache {
  std::mutex mu;
  std::map<std::size_t, Bucket> by_size;
  std::size_t kept = 0, cap = 0;
  std::int64_t boundary = 0;  // layer boundaries passed (AgeTensorCache)
  std::int64_t reused = 0, allocated = 0;
};

// Never destroyed: tensors freed during static destruction still return here.
Cache& TheCache() {
  static Cache* cache = new Cache;
  return *cache;
}

std::size_t SizeOf(void* data) {
  return *reinterpret_cast<std::size_t*>(static_cast<char*>(data) - kHeader);
}

void FreeToHeap(void* data) { std::free(static_cast<char*>(data) - kHeader); }

void Release(void* data) {
  if (data == nullptr) return;
  Cache& c = TheCache();
  const std::size_t n = SizeOf(data);
  {
    std::lock_guard<std::mutex> lock(c.mu);
    if (c.kept + n <= c.cap) {
      Bucket& bucket = c.by_size[n];
      bucket.buffers.push_back(data);
      bucket.last_boundary = c.boundary;
      c.kept += n;
      return;
    }
  }
  FreeToHeap(data);
}

void* Reuse(std::size_t n) {
  Cache& c = TheCache();
  std::lock_guard<std::mutex> lock(c.mu);
  const auto it = c.by_size.find(n);
  if (it == c.by_size.end() || it->second.buffers.empty()) {
    ++c.allocated;
    return nullptr;
  }
  void* data = it->second.buffers.back();
  it->second.buffers.pop_back();
  it->second.last_boundary = c.boundary;
  c.kept -= n;
  ++c.reused;
  return data;
}

void* FromHeap(std::size_t n) {
  void* base = nullptr;
  if (posix_memalign(&base, kHeader, n + kHeader) != 0) throw std::bad_alloc();
  *static_cast<std::size_t*>(base) = n;
  return static_cast<char*>(base) + kHeader;
}

struct CachingAllocator final : c10::Allocator {
  c10::DataPtr allocate(std::size_t n) const override {
    if (n == 0) return {nullptr, nullptr, &Release, c10::Device(c10::DeviceType::CPU)};
    void* data = Reuse(n);
    if (data == nullptr) data = FromHeap(n);
    return {data, data, &Release, c10::Device(c10::DeviceType::CPU)};
  }
  c10::DeleterFnPtr raw_deleter() const override { return &Release; }
};

}  // namespace

void InstallTensorCache(std::size_t cap_bytes) {
  static CachingAllocator allocator;
  {
    std::lock_guard<std::mutex> lock(TheCache().mu);
    TheCache().cap = cap_bytes;
  }
  c10::SetCPUAllocator(&allocator, /*priority=*/100);
}

void AgeTensorCache() {
  Cache& c = TheCache();
  std::vector<void*> dropped;
  {
    std::lock_guard<std::mutex> lock(c.mu);
    for (auto it = c.by_size.begin(); it != c.by_size.end();) {
      if (it->second.last_boundary + kStaleBoundaries > c.boundary) {
        ++it;
        continue;
      }
      c.kept -= it->first * it->second.buffers.size();
      dropped.insert(dropped.end(), it->second.buffers.begin(), it->second.buffers.end());
      it = c.by_size.erase(it);
    }
    ++c.boundary;
  }
  for (void* data : dropped) FreeToHeap(data);
}

void ReleaseLayerMemory() {
  AgeTensorCache();
  ReleaseFreedHeap();
}

TensorCacheCounts TensorCacheCountsNow() {
  Cache& c = TheCache();
  std::lock_guard<std::mutex> lock(c.mu);
  return {c.reused, c.allocated, c.kept};
}

}  // namespace kvfold
