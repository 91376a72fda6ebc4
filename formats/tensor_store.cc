#include "formats/tensor_store.h"

#include <sys/stat.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <nlohmann/json.hpp>

#include "formats/error.h"
#include "formats/json_file.h"

namespace kvfold {
namespace {

bool FileExists(const std::string& path) {
  struct stat st {};
  return ::stat(path.c_str(), &st) == 0 && S_ISREG(st.st_mode);
}

// A shard name from an index must stay inside the model directory.
bool IsPlainFileName(const std::string& name) {
  return !name.empty() && name.find('/') == std::string::npos && name != "." && name != "..";
}

}  // namespace

SafetensorsFile::SafetensorsFile(const std::string& path) : file_(path) {
  header_ = ParseSafetensorsHeader(file_.bytes(), file_.size(), path);
}

std::string_view SafetensorsFile::Bytes(const TensorEntry& entry) const {
  return file_.bytes().substr(header_.data_offset + entry.begin, entry.end - entry.begin);
}

void TensorStore::AddFile(std::unique_ptr<SafetensorsFile> file) {
  for (const auto& entry : file->header().tensors) {
    auto [it, inserted] = tensors_.emplace(entry.name, TensorRef{&entry, file.get(), nullptr});
    if (!inserted) {
      Fail(file->path(), "tensor '" + entry.name + "' also appears in " + it->second.file->path());
    }
  }
  files_.push_back(std::move(file));
}

TensorStore TensorStore::OpenFile(const std::string& path) {
  TensorStore store;
  store.origin_ = path;
  store.AddFile(std::make_unique<SafetensorsFile>(path));
  return store;
}

TensorStore TensorStore::OpenModelDir(const std::string& dir) {
  const std::string single = dir + "/model.safetensors";
  const std::string index_path = dir + "/model.safetensors.index.json";
  if (FileExists(single)) {
    TensorStore store = OpenFile(single);
    store.origin_ = dir;
    return store;
  }
  if (!FileExists(index_path)) {
    Fail(dir, "no model.safetensors or model.safetensors.index.json");
  }
  const nlohmann::json index = ReadJsonFile(index_path);
  if (!index.is_object() || !index.contains("weight_map") || !index["weight_map"].is_object()) {
    Fail(index_path, "missing object 'weight_map'");
  }
  const auto& weight_map = index["weight_map"];
  std::map<std::string, std::string> shard_of;  // tensor -> shard file name
  std::vector<std::string> shard_names;
  for (auto it = weight_map.begin(); it != weight_map.end(); ++it) {
    if (!it->is_string() || !IsPlainFileName(it->get<std::string>())) {
      Fail(index_path,
           "weight_map entry '" + it.key() + "' is not a file name in the model folder");
    }
    const std::string shard = it->get<std::string>();
    shard_of[it.key()] = shard;
    if (std::find(shard_names.begin(), shard_names.end(), shard) == shard_names.end()) {
      shard_names.push_back(shard);
    }
  }
  std::sort(shard_names.begin(), shard_names.end());

  TensorStore store;
  store.origin_ = dir;
  for (const auto& shard : shard_names) {
    store.AddFile(std::make_unique<SafetensorsFile>(dir + "/" + shard));
  }
  // The index and the shards must agree exactly.
  for (const auto& [name, shard] : shard_of) {
    const TensorRef* ref = store.Find(name);
    if (ref == nullptr) Fail(index_path, "tensor '" + name + "' is not in " + shard);
    if (ref->file->path() != dir + "/" + shard) {
      Fail(index_path,
           "tensor '" + name + "' is listed in " + shard + " but stored in " + ref->file->path());
    }
  }
  for (const auto& [name, ref] : store.tensors_) {
    if (shard_of.count(name) == 0) {
      Fail(ref.file->path(), "tensor '" + name + "' is missing from " + index_path);
    }
  }
  return store;
}

const TensorRef* TensorStore::Find(const std::string& name) const {
  auto it = tensors_.find(name);
  return it == tensors_.end() ? nullptr : &it->second;
}

const TensorRef& TensorStore::Get(const std::string& name) const {
  const TensorRef* ref = Find(name);
  if (ref == nullptr) Fail(origin_, "missing tensor '" + name + "'");
  return *ref;
}

std::vector<std::string> TensorStore::Names() const {
  std::vector<std::string> names;
  for (const auto& kv : tensors_) names.push_back(kv.first);
  return names;
}

namespace {

const TensorRef& FloatingTensor(const TensorStore& store, const std::string& name) {
  const TensorRef& ref = store.Get(name);
  if (!IsFloatingCompute(ref.entry->dtype)) {
    Fail(ref.file->path(), "tensor '" + name + "' has dtype " + DTypeName(ref.entry->dtype) +
                               "; kvfold computes with F32, F16 or BF16");
  }
  return ref;
}

// A NaN or inf weight would surface much later as a failed eigendecomposition or a NaN
// perplexity; name the tensor (and the element, counted from `first`) now.
void RequireFinite(const TensorRef& ref, const float* values, std::size_t count,
                   std::size_t first) {
  // A branch-free scan first (vectorized; all-ones exponent bits are inf or NaN), then, only
  // when it found one, the loop that names the element.
  std::uint32_t all_ones = 0;
  for (std::size_t i = 0; i < count; ++i) {
    std::uint32_t u;
    std::memcpy(&u, values + i, 4);
    all_ones |= static_cast<std::uint32_t>((u & 0x7f800000u) == 0x7f800000u);
  }
  if (all_ones == 0) return;
  for (std::size_t i = 0; i < count; ++i) {
    if (!std::isfinite(values[i])) {
      Fail(ref.file->path(), "tensor '" + ref.entry->name + "' holds " + std::to_string(values[i]) +
                                 " at element " + std::to_string(first + i) +
                                 " (weights must be finite)");
    }
  }
}

}  // namespace

std::size_t RowBytes(DType dtype, const std::vector<std::int64_t>& shape) {
  std::size_t n = DTypeSize(dtype);
  for (std::size_t i = 1; i < shape.size(); ++i) n *= static_cast<std::size_t>(shape[i]);
  return n;
}

std::string MoveRows(std::string_view bytes, std::size_t row_bytes,
                     const std::vector<std::int64_t>& order, RowMove move) {
  std::string out(bytes.size(), '\0');
  for (std::size_t i = 0; i < order.size(); ++i) {
    const std::size_t other = static_cast<std::size_t>(order[i]) * row_bytes, own = i * row_bytes;
    const bool gather = move == RowMove::kGather;
    std::memcpy(out.data() + (gather ? own : other), bytes.data() + (gather ? other : own),
                row_bytes);
  }
  return out;
}

std::string OrderedBytes(const TensorRef& ref) {
  if (!ref.row_order) return std::string(ref.bytes());
  return MoveRows(ref.bytes(), RowBytes(ref.entry->dtype, ref.entry->shape), *ref.row_order,
                  RowMove::kGather);
}

void TensorStore::ReadF32(const std::string& name, float* dst) const {
  const TensorRef& ref = FloatingTensor(*this, name);
  const auto count = static_cast<std::size_t>(ref.entry->NumElements());
  if (ref.row_order) {
    const std::string ordered = OrderedBytes(ref);
    ConvertToF32(ref.entry->dtype, ordered.data(), count, dst);
  } else {
    ConvertToF32(ref.entry->dtype, ref.bytes().data(), count, dst);
  }
  ReleaseMappedPages(ref.bytes());
  RequireFinite(ref, dst, count, 0);
}

void TensorStore::SplitRows(const std::string& stored, const std::vector<RowView>& views) {
  const TensorRef whole = FloatingTensor(*this, stored);
  const TensorEntry& e = *whole.entry;
  std::int64_t rows = 0;
  for (const RowView& v : views) rows += v.rows;
  if (e.shape.empty() || e.shape.size() > 2 || e.shape[0] != rows) {
    Fail(whole.file->path(), "tensor '" + stored + "' has " +
                                 std::to_string(e.shape.empty() ? 0 : e.shape[0]) +
                                 " rows; the config implies " + std::to_string(rows));
  }
  const std::size_t row = RowBytes(e.dtype, e.shape);
  tensors_.erase(stored);  // `whole` keeps its entry and file; a view may reuse the name
  std::int64_t first = 0;
  for (const RowView& v : views) {
    auto view = std::make_unique<TensorEntry>(e);
    view->name = v.name;
    view->shape[0] = v.rows;
    view->begin = e.begin + static_cast<std::uint64_t>(first) * row;
    view->end = view->begin + static_cast<std::uint64_t>(v.rows) * row;
    TensorRef ref{view.get(), whole.file, nullptr};
    if (!v.order.empty()) ref.row_order = std::make_shared<std::vector<std::int64_t>>(v.order);
    if (!tensors_.emplace(v.name, ref).second)
      Fail(whole.file->path(),
           "tensor '" + v.name + "' is stored both alone and in '" + stored + "'");
    views_.push_back(std::move(view));
    first += v.rows;
  }
}

void TensorStore::ReadRowsF32(const std::string& name, const std::vector<std::int64_t>& rows,
                              float* dst) const {
  const TensorRef& ref = FloatingTensor(*this, name);
  if (ref.entry->shape.size() != 2) Fail(ref.file->path(), "tensor '" + name + "' is not a matrix");
  const std::int64_t count = ref.entry->shape[0], width = ref.entry->shape[1];
  const std::size_t row_bytes = static_cast<std::size_t>(width) * DTypeSize(ref.entry->dtype);
  const auto cols = static_cast<std::size_t>(width);
  for (std::size_t i = 0; i < rows.size(); ++i) {
    if (rows[i] < 0 || rows[i] >= count) {
      Fail(ref.file->path(),
           "row " + std::to_string(rows[i]) + " of tensor '" + name + "' is out of range");
    }
    const std::size_t at = static_cast<std::size_t>(
        ref.row_order ? (*ref.row_order)[static_cast<std::size_t>(rows[i])] : rows[i]);
    ConvertToF32(ref.entry->dtype, ref.bytes().data() + at * row_bytes, cols, dst + i * cols);
    RequireFinite(ref, dst + i * cols, cols, at * cols);
  }
  ReleaseMappedPages(ref.bytes());
}

std::vector<float> TensorStore::ReadF32(const std::string& name) const {
  std::vector<float> out(static_cast<std::size_t>(Get(name).entry->NumElements()));
  ReadF32(name, out.data());
  return out;
}

}  // namespace kvfold
