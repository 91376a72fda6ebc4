// libFuzzer target: kvfold's own tables read back by `eval --kv-cache` (the eviction policy
// table and the MiKV mixed-precision table). The first byte picks the reader; the rest is the
// JSON file. Reading either succeeds with a consistent table or raises kvfold::Error.
#include <cstdint>
#include <string_view>

#include "formats/error.h"
#include "formats/eviction_table.h"
#include "formats/kv_mixed_table.h"
#include "fuzz/fuzz_scratch.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size == 0) return 0;
  const std::string path = kvfold::fuzz::ScratchDir() + "/table.json";
  kvfold::fuzz::WriteScratch(path,
                             std::string_view(reinterpret_cast<const char*>(data) + 1, size - 1));
  try {
    if (data[0] % 2 == 0) {
      const kvfold::EvictionTable t = kvfold::ReadEvictionTable(path);
      if (static_cast<std::int64_t>(t.heads.size()) != t.layers * t.kv_heads) __builtin_trap();
    } else {
      (void)kvfold::ReadKvMixedTable(path);
    }
  } catch (const kvfold::Error&) {
  }
  return 0;
}
