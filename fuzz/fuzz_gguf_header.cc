// libFuzzer target: any byte string given to the GGUF header parser either parses into a header
// whose every tensor lies inside the file, aligned and apart, or raises kvfold::Error. Anything
// else (a crash, a sanitizer report, another exception type, an allocation beyond the input's
// size times a small factor) is a bug.
#include <cstdint>
#include <string_view>

#include "formats/error.h"
#include "formats/gguf.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view bytes(reinterpret_cast<const char*>(data), size);
  try {
    const kvfold::GgufHeader h = kvfold::ParseGgufHeader(bytes, "fuzz");
    for (const auto& t : h.tensors) {
      if (h.data_offset + t.offset + t.bytes > size || t.offset % h.alignment != 0)
        __builtin_trap();
    }
  } catch (const kvfold::Error&) {
  }
  return 0;
}
