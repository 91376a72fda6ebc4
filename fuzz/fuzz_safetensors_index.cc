// libFuzzer target: model.safetensors.index.json. The folder holds two valid shards; whatever the
// index says, opening the model either agrees with the shards exactly or raises kvfold::Error
// (a shard name leaving the folder, a tensor listed in the wrong shard, a type mismatch...).
#include <cstdint>
#include <string_view>

#include "formats/error.h"
#include "formats/tensor_store.h"
#include "fuzz/fuzz_scratch.h"

using kvfold::fuzz::SafetensorsImage;
using kvfold::fuzz::ScratchDir;
using kvfold::fuzz::WriteScratch;

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  static const bool shards_written = [] {
    WriteScratch(ScratchDir() + "/model-00001-of-00002.safetensors",
                 SafetensorsImage(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})", 8));
    WriteScratch(
        ScratchDir() + "/model-00002-of-00002.safetensors",
        SafetensorsImage(R"({"b":{"dtype":"F16","shape":[2,2],"data_offsets":[0,8]}})", 8));
    return true;
  }();
  (void)shards_written;
  WriteScratch(ScratchDir() + "/model.safetensors.index.json",
               std::string_view(reinterpret_cast<const char*>(data), size));
  try {
    const kvfold::TensorStore store = kvfold::TensorStore::OpenModelDir(ScratchDir());
    for (const auto& [name, ref] : store.tensors()) {
      if (ref.bytes().size() != ref.entry->end - ref.entry->begin) __builtin_trap();
    }
  } catch (const kvfold::Error&) {
  }
  return 0;
}
