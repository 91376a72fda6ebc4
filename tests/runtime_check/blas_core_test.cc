#include "runtime_check/blas_core.h"

#include <dlfcn.h>

#include <catch2/catch.hpp>

#include "formats/checkpoint.h"
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
}
