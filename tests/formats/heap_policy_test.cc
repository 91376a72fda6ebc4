// The heap policy (formats/heap_policy.h): large buffers are advised transparent huge pages.
#include "formats/heap_policy.h"

#include <catch2/catch.hpp>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

using namespace kvfold;

namespace {

// The VmFlags line of the mapping that holds `p` in /proc/self/smaps ("" when none does). A
// mapping's first line is "begin-end perms ..." (its first ':' after the first space, in the
// device field); its fields follow as "Name: value".
std::string VmFlagsOf(const void* p) {
  std::ifstream smaps("/proc/self/smaps");
  const auto at = reinterpret_cast<std::uintptr_t>(p);
  bool inside = false;
  for (std::string line; std::getline(smaps, line);) {
    unsigned long long begin = 0, end = 0;
    const bool header = std::sscanf(line.c_str(), "%llx-%llx ", &begin, &end) == 2 &&
                        line.find(':') > line.find(' ');
    if (header) inside = at >= begin && at < end;
    if (inside && line.rfind("VmFlags:", 0) == 0) return line + " ";
  }
  return "";
}

}  // namespace

TEST_CASE("after SetHeapPolicy, buffers glibc maps on their own are advised huge pages", "[heap]") {
  if (KVFOLD_SANITIZED) {
    SetHeapPolicy();
    CHECK_FALSE(AdvisesHugePages(64u << 20));
    WARN("skipped: sanitizer builds keep the runtime's operator new");
    return;
  }
  if (!std::ifstream("/sys/kernel/mm/transparent_hugepage/enabled")) {
    WARN("skipped: this kernel has no transparent huge pages");
    return;
  }
  ::setenv("KVFOLD_HUGE_PAGES", "0", 1);  // the opt-out
  SetHeapPolicy();
  CHECK_FALSE(AdvisesHugePages(64u << 20));
  ::unsetenv("KVFOLD_HUGE_PAGES");
  SetHeapPolicy();
  CHECK(AdvisesHugePages(64u << 20));
  CHECK_FALSE(AdvisesHugePages(1u << 20));  // below glibc's mmap threshold: the reused heap
  const std::vector<double> big(8u << 20);  // 64 MiB: a mapping of its own
  for (const double* at : {big.data(), big.data() + big.size() / 2}) {
    const std::string flags = VmFlagsOf(at);
    INFO(flags);
    REQUIRE(!flags.empty());
    CHECK(flags.find(" hg ") != std::string::npos);  // VM_HUGEPAGE: madvise(MADV_HUGEPAGE) ran
  }
}
