// libFuzzer target: the pre-tokenized calibration readers (formats/token_ids.h). The first byte
// picks the reader (even: NumPy .npy, odd: JSON Lines); the rest is the file. Reading either
// gives ids inside the vocabulary or raises kvfold::Error; a hang, a read past the input or
// another exception type is a bug.
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "formats/error.h"
#include "formats/token_ids.h"

namespace {

constexpr std::int64_t kVocab = 32000;

void CheckIds(const std::vector<std::int32_t>& ids) {
  for (const std::int32_t id : ids) {
    if (id < 0 || id >= kVocab) __builtin_trap();
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size == 0) return 0;
  const std::string_view bytes(reinterpret_cast<const char*>(data) + 1, size - 1);
  try {
    if (data[0] % 2 == 0) {
      CheckIds(kvfold::ParseNpyTokenIds(bytes, kVocab, "fuzz.npy"));
    } else {
      std::size_t documents = 0;
      const kvfold::JsonLinesIds j =
          kvfold::ParseJsonLines(bytes, kVocab, "fuzz.jsonl",
                                 [&](const std::string&, const std::string&) { ++documents; });
      if (j.documents != (documents > 0) || (j.documents && !j.ids.empty())) __builtin_trap();
      CheckIds(j.ids);
    }
  } catch (const kvfold::Error&) {
  }
  return 0;
}
