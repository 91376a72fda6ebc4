// libFuzzer target: any byte string given to the safetensors header parser either parses into a
// header whose offsets all lie inside the file, or raises kvfold::Error. Anything else (a crash,
// a sanitizer report, another exception type) is a bug.
#include <cstdint>
#include <string_view>

#include "formats/error.h"
#include "formats/safetensors_header.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view bytes(reinterpret_cast<const char*>(data), size);
  try {
    const kvfold::SafetensorsHeader h = kvfold::ParseSafetensorsHeader(bytes, size, "fuzz");
    for (const auto& t : h.tensors) {
      if (h.data_offset + t.end > size || t.begin > t.end) __builtin_trap();
    }
  } catch (const kvfold::Error&) {
  }
  return 0;
}
