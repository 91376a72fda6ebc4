#include "runtime_check/blas_core.h"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <dlfcn.h>

#include <algorithm>
#include <catch2/catch.hpp>
#include <cstdlib>
#include <thread>

#include "formats/checkpoint.h"
#include "runtime_check/blas_threads.h"
#include "runtime_check/reference_model.h"
#include "tests/test_support.h"

using namespace kvfold;

TEST_CASE("a generic OpenBLAS core is replaced by the kernels the CPU supports", "[blas]") {
  const CpuFeatures avx512{true, true}, avx2{true, false}, sse{false, false};
  CHECK(BetterCoreType("Prescott", avx512) == "SKYLAKEX");  // Debian 0.3.21 on Sapphire Rapids
  CHECK(BetterCoreType("Haswell", avx512) == "SKYLAKEX");
  CHECK(BetterCoreType("Prescott", avx2) == "HASWELL");
  CHECK(BetterCoreType("Sandybridge", avx2) == "HASWELL");
  CHECK(BetterCoreType("Haswell", avx2).empty());  // already right
  CHECK(BetterCoreType("Zen", avx2).empty());      // AMD's own kernels stay
  CHECK(BetterCoreType("SkylakeX", avx512).empty());
  CHECK(BetterCoreType("Prescott", sse).empty());  // nothing better to run
  CHECK(BetterCoreType("", avx512).empty());       // not OpenBLAS
}

TEST_CASE("the BLAS in use is described", "[blas]") {
  // scripts/setup.sh selects OpenBLAS for libblas.so.3: its config string names it.
  CHECK(BlasDescription().find("OpenBLAS") != std::string::npos);
  CHECK(BlasDescription().find("(core ") != std::string::npos);
}

TEST_CASE("--threads N sets OpenBLAS's own pool to N threads", "[blas][shared]") {
  // Before, OpenBLAS kept one thread per core whatever --threads said (docs/results.md, "CPU
  // time of conversion and eval").
  const auto get = reinterpret_cast<int (*)()>(::dlsym(RTLD_DEFAULT, "openblas_get_num_threads"));
  if (get == nullptr) {
    WARN("SKIPPED: the BLAS is not OpenBLAS");
    return;
  }
  const Checkpoint ck = OpenCheckpoint(test::SharedPath("models/stories260K"));
  ReferenceModel::Load(ck, {"cpu", 1});
  CHECK(get() == 1);
  ReferenceModel::Load(ck, {"cpu", 2});
  CHECK(get() == 2);
  CHECK(at::get_num_threads() == 2);
  // 0, the default, is every core for both pools. It used to leave LibTorch's own default,
  // which is 1 thread on these 2-core machines (docs/results.md, "Threads that work as threads").
  const int cores = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  ReferenceModel::Load(ck, {"cpu", 1});
  ReferenceModel::Load(ck, {"cpu", 0});
  CHECK(get() == cores);
  CHECK(at::get_num_threads() == cores);
}

TEST_CASE("OpenBLAS's restarted pool sleeps when idle and still computes", "[blas]") {
  const auto timeout =
      reinterpret_cast<int (*)()>(::dlsym(RTLD_DEFAULT, "openblas_thread_timeout"));
  if (timeout == nullptr || std::getenv("OPENBLAS_THREAD_TIMEOUT") != nullptr) {
    WARN("SKIPPED: the BLAS is not OpenBLAS, or OPENBLAS_THREAD_TIMEOUT is set outside");
    return;
  }
  SleepIdleBlasThreads();
  CHECK(timeout() == 4);  // what the restarted pool read
  SetBlasThreads(2);
  // A product large enough for OpenBLAS to split across its threads, against float64.
  const at::Tensor a = at::randn({512, 384}, at::kDouble), b = at::randn({384, 256}, at::kDouble);
  const at::Tensor product = at::matmul(a.to(at::kFloat), b.to(at::kFloat)).to(at::kDouble);
  // float32 sums of 384 products of unit normals: errors ~1e-5 of the ~20 magnitude; 1e-3
  // absolute is far above rounding and far below a wrong block (~20).
  CHECK((product - at::matmul(a, b)).abs().max().item<double>() < 1e-3);
}
