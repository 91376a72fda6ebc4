// TensorStore: the tensors of a checkpoint, read through mmap from one safetensors file or from
// the shards listed in model.safetensors.index.json. Nothing is copied until a tensor is read.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "formats/mapped_file.h"
#include "formats/safetensors_header.h"

namespace kvfold {

// One validated safetensors file, mapped read-only.
class SafetensorsFile {
 public:
  explicit SafetensorsFile(const std::string& path);
  const SafetensorsHeader& header() const { return header_; }
  const std::string& path() const { return file_.path(); }
  // The raw little-endian bytes of `entry` (which must come from this file's header).
  std::string_view Bytes(const TensorEntry& entry) const;

 private:
  MappedFile file_;
  SafetensorsHeader header_;
};

struct TensorRef {
  const TensorEntry* entry = nullptr;
  const SafetensorsFile* file = nullptr;
  // A view whose rows kvfold orders differently from the file (formats/stored_layout.h): row i
  // is the entry's stored row (*row_order)[i]. Null when the order is the file's.
  std::shared_ptr<const std::vector<std::int64_t>> row_order;
  // The stored bytes, in the file's row order.
  std::string_view bytes() const { return file->Bytes(*entry); }
};

// Bytes per row (first dimension) of a tensor of `dtype` and `shape`.
std::size_t RowBytes(DType dtype, const std::vector<std::int64_t>& shape);

// Rows of `row_bytes` bytes moved by `order`. kGather: row i of the result is row order[i] of
// `bytes` (a stored order read in kvfold's); kScatter: the inverse, row i goes to row order[i].
// Rows `order` does not reach stay zero.
enum class RowMove { kGather, kScatter };
std::string MoveRows(std::string_view bytes, std::size_t row_bytes,
                     const std::vector<std::int64_t>& order, RowMove move);

// The bytes of `ref` with its rows in kvfold's order (a copy when a row order applies).
std::string OrderedBytes(const TensorRef& ref);

// Part of a stored tensor seen as a tensor of its own: rows [first_row, first_row + rows) of a
// 2-D or 1-D tensor, under `name`, with an optional row order within the part.
struct RowView {
  std::string name;
  std::int64_t first_row = 0;
  std::int64_t rows = 0;
  std::vector<std::int64_t> order;  // empty: the stored order
};

class TensorStore {
 public:
  // Opens `dir`/model.safetensors, or the shards named by `dir`/model.safetensors.index.json.
  static TensorStore OpenModelDir(const std::string& dir);
  // Opens a single safetensors file.
  static TensorStore OpenFile(const std::string& path);

  const TensorRef* Find(const std::string& name) const;
  // Like Find, but throws Error naming the checkpoint when the tensor is absent.
  const TensorRef& Get(const std::string& name) const;
  std::vector<std::string> Names() const;
  const std::map<std::string, TensorRef>& tensors() const { return tensors_; }
  const std::vector<std::unique_ptr<SafetensorsFile>>& files() const { return files_; }
  // Where this store came from (directory or file), for error messages.
  const std::string& origin() const { return origin_; }

  // Reads a floating tensor (F32/F16/BF16) as float32 into `dst` (NumElements() floats), then
  // releases its mapped pages (formats/mapped_file.h): a reader holds what it converted, and
  // the source bytes leave the resident set.
  void ReadF32(const std::string& name, float* dst) const;
  // Rows `rows` of the 2-D floating tensor `name` ([R, C]) as float32 [rows.size(), C] into
  // `dst`: an embedding lookup straight from the map. Throws Error for a row out of range.
  void ReadRowsF32(const std::string& name, const std::vector<std::int64_t>& rows,
                   float* dst) const;
  std::vector<float> ReadF32(const std::string& name) const;

  // Replaces the stored tensor `stored` by `views` (which must tile its rows); it is no longer
  // listed or found under its own name unless a view takes it. Throws Error naming it when it is
  // not a floating tensor of one or two dimensions with exactly that many rows.
  void SplitRows(const std::string& stored, const std::vector<RowView>& views);

 private:
  void AddFile(std::unique_ptr<SafetensorsFile> file);

  std::string origin_;
  std::vector<std::unique_ptr<SafetensorsFile>> files_;
  std::map<std::string, TensorRef> tensors_;
  std::vector<std::unique_ptr<TensorEntry>> views_;  // the entries SplitRows made
};

}  // namespace kvfold
