#include "formats/safetensors_writer.h"

#include <algorithm>
#include <nlohmann/json.hpp>

#include "formats/atomic_file.h"
#include "formats/error.h"
#include "formats/mapped_file.h"

namespace kvfold {

void CheckTensorToWrite(const TensorToWrite& t, const std::string& where) {
  if (t.name.empty() || t.name == "__metadata__")
    Fail(where, "invalid tensor name '" + t.name + "'");
  std::uint64_t expected = DTypeSize(t.dtype);
  for (auto d : t.shape) {
    if (d < 0) Fail(where, "tensor '" + t.name + "' has a negative dimension");
    expected *= static_cast<std::uint64_t>(d);
  }
  if (expected != t.bytes.size()) {
    Fail(where, "tensor '" + t.name + "' has " + std::to_string(t.bytes.size()) +
                    " bytes, its shape needs " + std::to_string(expected));
  }
}

namespace {

void SortAndCheck(std::vector<TensorToWrite>& tensors, const std::string& path) {
  std::sort(tensors.begin(), tensors.end(),
            [](const TensorToWrite& a, const TensorToWrite& b) { return a.name < b.name; });
  for (std::size_t i = 0; i < tensors.size(); ++i) {
    if (i > 0 && tensors[i - 1].name == tensors[i].name)
      Fail(path, "tensor '" + tensors[i].name + "' given twice");
    CheckTensorToWrite(tensors[i], path);
  }
}

void WriteSorted(const std::string& path, const std::vector<TensorToWrite>& tensors,
                 const std::map<std::string, std::string>& metadata) {
  nlohmann::json header = nlohmann::json::object();
  if (!metadata.empty()) header["__metadata__"] = metadata;
  std::uint64_t offset = 0;
  for (const auto& t : tensors) {
    header[t.name] = {{"dtype", DTypeName(t.dtype)},
                      {"shape", t.shape},
                      {"data_offsets", {offset, offset + t.bytes.size()}}};
    offset += t.bytes.size();
  }
  std::string text = header.dump();
  text.append((8 - text.size() % 8) % 8, ' ');  // keep the data area 8-byte aligned
  std::uint8_t len[8];
  std::uint64_t n = text.size();
  for (int i = 0; i < 8; ++i) len[i] = static_cast<std::uint8_t>(n >> (8 * i));

  AtomicFile out(path);
  out.Write(len, 8);
  out.Write(text);
  for (const auto& t : tensors) {
    out.Write(t.bytes.data(), t.bytes.size());
    if (t.mapped) ReleaseMappedPages(t.bytes);
  }
  out.Commit();
}

}  // namespace

void WriteSafetensors(const std::string& path, std::vector<TensorToWrite> tensors,
                      const std::map<std::string, std::string>& metadata) {
  SortAndCheck(tensors, path);
  WriteSorted(path, tensors, metadata);
}

}  // namespace kvfold
