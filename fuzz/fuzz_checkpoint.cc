// libFuzzer target: checkpoint validation, where config.json and the weights' shapes meet. The
// input is config.json, a NUL byte, then the safetensors header of model.safetensors (its data
// area is 64 KiB of zeros). Opening either yields a checkpoint whose every required tensor has
// the shape the config implies, or raises kvfold::Error; overflowing size arithmetic, huge
// allocations or another exception type are bugs.
#include <cstdint>
#include <cstring>
#include <string_view>

#include "formats/checkpoint.h"
#include "formats/error.h"
#include "fuzz/fuzz_scratch.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view input(reinterpret_cast<const char*>(data), size);
  const std::size_t nul = input.find('\0');
  if (nul == std::string_view::npos) return 0;
  const std::string& dir = kvfold::fuzz::ScratchDir();
  kvfold::fuzz::WriteScratch(dir + "/config.json", input.substr(0, nul));
  kvfold::fuzz::WriteScratch(dir + "/model.safetensors",
                             kvfold::fuzz::SafetensorsImage(input.substr(nul + 1), 1 << 16));
  try {
    const kvfold::Checkpoint ck = kvfold::OpenCheckpoint(dir);
    for (const kvfold::TensorId& id : kvfold::RequiredTensors(ck.config)) {
      if (ck.Tensor(id).entry->shape != kvfold::ExpectedShape(id, ck.config)) __builtin_trap();
    }
    (void)ck.config.KvBytesPerToken(ck.StoredElementBytes());
  } catch (const kvfold::Error&) {
  }
  return 0;
}
