#include "formats/gguf.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <set>

#include "formats/atomic_file.h"
#include "formats/error.h"
#include "formats/positioned_io.h"

namespace kvfold {

namespace {

constexpr char kMagic[4] = {'G', 'G', 'U', 'F'};
constexpr const char* kPaddingKey = "kvfold.padding";

struct TypeTraits {
  GgmlType type;
  const char* name;
  std::uint64_t block;  // elements per block
  std::uint64_t bytes;  // bytes per block
};

constexpr TypeTraits kTypes[] = {
    {GgmlType::kF32, "F32", 1, 4},         {GgmlType::kF16, "F16", 1, 2},
    {GgmlType::kQ4_0, "Q4_0", 32, 18},     {GgmlType::kQ4_1, "Q4_1", 32, 20},
    {GgmlType::kQ5_0, "Q5_0", 32, 22},     {GgmlType::kQ5_1, "Q5_1", 32, 24},
    {GgmlType::kQ8_0, "Q8_0", 32, 34},     {GgmlType::kQ8_1, "Q8_1", 32, 36},
    {GgmlType::kQ2_K, "Q2_K", 256, 84},    {GgmlType::kQ3_K, "Q3_K", 256, 110},
    {GgmlType::kQ4_K, "Q4_K", 256, 144},   {GgmlType::kQ5_K, "Q5_K", 256, 176},
    {GgmlType::kQ6_K, "Q6_K", 256, 210},   {GgmlType::kQ8_K, "Q8_K", 256, 292},
    {GgmlType::kIQ4_NL, "IQ4_NL", 32, 18}, {GgmlType::kI8, "I8", 1, 1},
    {GgmlType::kI16, "I16", 1, 2},         {GgmlType::kI32, "I32", 1, 4},
    {GgmlType::kI64, "I64", 1, 8},         {GgmlType::kF64, "F64", 1, 8},
    {GgmlType::kBF16, "BF16", 1, 2},
};

const TypeTraits* FindType(std::uint32_t type) {
  for (const auto& t : kTypes) {
    if (static_cast<std::uint32_t>(t.type) == type) return &t;
  }
  return nullptr;
}

// Bytes of one scalar of `type`; 0 for strings and arrays.
std::size_t ScalarBytes(GgufValueType type) {
  switch (type) {
    case GgufValueType::kU8:
    case GgufValueType::kI8:
    case GgufValueType::kBool:
      return 1;
    case GgufValueType::kU16:
    case GgufValueType::kI16:
      return 2;
    case GgufValueType::kU32:
    case GgufValueType::kI32:
    case GgufValueType::kF32:
      return 4;
    case GgufValueType::kU64:
    case GgufValueType::kI64:
    case GgufValueType::kF64:
      return 8;
    default:
      return 0;
  }
}

bool KnownValueType(std::uint32_t t) {
  return t <= static_cast<std::uint32_t>(GgufValueType::kF64);
}

std::uint64_t AlignUp(std::uint64_t n, std::uint64_t alignment) {
  return (n + alignment - 1) / alignment * alignment;
}

// ---- encoding ----

void PutRaw(std::string& out, const void* p, std::size_t n) {
  out.append(static_cast<const char*>(p), n);
}
template <typename T>
void Put(std::string& out, T v) {
  PutRaw(out, &v, sizeof v);
}
void PutString(std::string& out, const std::string& s) {
  Put<std::uint64_t>(out, s.size());
  out += s;
}

void PutScalar(std::string& out, GgufValueType type, double v) {
  switch (type) {
    case GgufValueType::kU8:
      return Put(out, static_cast<std::uint8_t>(v));
    case GgufValueType::kI8:
      return Put(out, static_cast<std::int8_t>(v));
    case GgufValueType::kBool:
      return Put(out, static_cast<std::uint8_t>(v != 0));
    case GgufValueType::kU16:
      return Put(out, static_cast<std::uint16_t>(v));
    case GgufValueType::kI16:
      return Put(out, static_cast<std::int16_t>(v));
    case GgufValueType::kU32:
      return Put(out, static_cast<std::uint32_t>(v));
    case GgufValueType::kI32:
      return Put(out, static_cast<std::int32_t>(v));
    case GgufValueType::kF32:
      return Put(out, static_cast<float>(v));
    case GgufValueType::kU64:
      return Put(out, static_cast<std::uint64_t>(v));
    case GgufValueType::kI64:
      return Put(out, static_cast<std::int64_t>(v));
    case GgufValueType::kF64:
      return Put(out, v);
    default:
      Fail("gguf", "internal error: not a scalar type");
  }
}

void PutValue(std::string& out, const GgufValue& v) {
  Put<std::uint32_t>(out, static_cast<std::uint32_t>(v.type));
  if (v.type == GgufValueType::kString) return PutString(out, v.strings.at(0));
  if (!v.IsArray()) return PutScalar(out, v.type, v.numbers.at(0));
  Put<std::uint32_t>(out, static_cast<std::uint32_t>(v.element));
  Put<std::uint64_t>(out, v.size());
  for (const auto& s : v.strings) PutString(out, s);
  for (double n : v.numbers) PutScalar(out, v.element, n);
}

void PutTensorInfo(std::string& out, const GgufTensorInfo& t) {
  PutString(out, t.name);
  Put<std::uint32_t>(out, static_cast<std::uint32_t>(t.dims.size()));
  for (auto d : t.dims) Put<std::uint64_t>(out, d);
  Put<std::uint32_t>(out, static_cast<std::uint32_t>(t.type));
  Put<std::uint64_t>(out, t.offset);
}

// ---- decoding (untrusted) ----

class Reader {
 public:
  Reader(std::string_view bytes, const std::string& file) : bytes_(bytes), file_(file) {}

  const char* Take(std::uint64_t n, const char* what) {
    if (n > bytes_.size() - pos_) {
      Fail(file_, std::string("truncated GGUF header: ") + what + " at byte " +
                      std::to_string(pos_) + " runs past the end of the file");
    }
    const char* p = bytes_.data() + pos_;
    pos_ += n;
    return p;
  }
  template <typename T>
  T Get(const char* what) {
    T v;
    std::memcpy(&v, Take(sizeof v, what), sizeof v);
    return v;
  }
  std::string GetString(const char* what) {
    const auto n = Get<std::uint64_t>(what);
    return std::string(Take(n, what), n);
  }
  // At least `count` more items of `bytes_each` bytes must fit in what is left.
  void RequireRoom(std::uint64_t count, std::uint64_t bytes_each, const std::string& what) {
    if (bytes_each != 0 && count > (bytes_.size() - pos_) / bytes_each) {
      Fail(file_, what + ": " + std::to_string(count) + " entries cannot fit in the " +
                      std::to_string(bytes_.size() - pos_) + " bytes left in the file");
    }
  }
  std::uint64_t pos() const { return pos_; }
  std::uint64_t size() const { return bytes_.size(); }
  const std::string& file() const { return file_; }

 private:
  std::string_view bytes_;
  const std::string& file_;
  std::uint64_t pos_ = 0;
};

double GetScalar(Reader& r, GgufValueType type, const char* what) {
  switch (type) {
    case GgufValueType::kU8:
      return r.Get<std::uint8_t>(what);
    case GgufValueType::kI8:
      return r.Get<std::int8_t>(what);
    case GgufValueType::kBool: {
      const auto b = r.Get<std::uint8_t>(what);
      if (b > 1) Fail(r.file(), std::string(what) + ": a bool is " + std::to_string(b));
      return b;
    }
    case GgufValueType::kU16:
      return r.Get<std::uint16_t>(what);
    case GgufValueType::kI16:
      return r.Get<std::int16_t>(what);
    case GgufValueType::kU32:
      return r.Get<std::uint32_t>(what);
    case GgufValueType::kI32:
      return r.Get<std::int32_t>(what);
    case GgufValueType::kF32:
      return r.Get<float>(what);
    case GgufValueType::kU64:
      return static_cast<double>(r.Get<std::uint64_t>(what));
    case GgufValueType::kI64:
      return static_cast<double>(r.Get<std::int64_t>(what));
    case GgufValueType::kF64:
      return r.Get<double>(what);
    default:
      Fail(r.file(), "internal error: not a scalar type");
  }
}

GgufValue GetValue(Reader& r, const std::string& key) {
  GgufValue v;
  const auto type = r.Get<std::uint32_t>("value type");
  if (!KnownValueType(type))
    Fail(r.file(), "metadata '" + Printable(key) + "' has unknown type " + std::to_string(type));
  v.type = static_cast<GgufValueType>(type);
  if (v.type == GgufValueType::kString) {
    v.strings.push_back(r.GetString("string value"));
    return v;
  }
  if (!v.IsArray()) {
    v.numbers.push_back(GetScalar(r, v.type, "value"));
    return v;
  }
  const auto element = r.Get<std::uint32_t>("array type");
  if (!KnownValueType(element) || element == static_cast<std::uint32_t>(GgufValueType::kArray)) {
    Fail(r.file(), "metadata '" + Printable(key) + "' is an array of type " +
                       std::to_string(element) + " (nested or unknown)");
  }
  v.element = static_cast<GgufValueType>(element);
  const auto count = r.Get<std::uint64_t>("array length");
  const bool strings = v.element == GgufValueType::kString;
  // A string takes at least its 8-byte length.
  r.RequireRoom(count, strings ? 8 : ScalarBytes(v.element), "metadata '" + Printable(key) + "'");
  for (std::uint64_t i = 0; i < count; ++i) {
    if (strings) {
      v.strings.push_back(r.GetString("array string"));
    } else {
      v.numbers.push_back(GetScalar(r, v.element, "array value"));
    }
  }
  return v;
}

GgufTensorInfo GetTensorInfo(Reader& r) {
  GgufTensorInfo t;
  t.name = r.GetString("tensor name");
  const std::string where = "tensor '" + Printable(t.name) + "'";
  if (t.name.empty() || t.name.size() > kGgufMaxNameBytes)
    Fail(r.file(), where + ": a name must have 1 to 63 bytes");
  const auto n_dims = r.Get<std::uint32_t>("tensor dimensions");
  if (n_dims == 0 || n_dims > kGgufMaxDims)
    Fail(r.file(), where + " has " + std::to_string(n_dims) + " dimensions (1 to 4 allowed)");
  for (std::uint32_t i = 0; i < n_dims; ++i) {
    const auto d = r.Get<std::uint64_t>("tensor dimension");
    if (d == 0 || d > (std::uint64_t{1} << 62))
      Fail(r.file(), where + " has dimension " + std::to_string(d));
    t.dims.push_back(d);
  }
  const auto type = r.Get<std::uint32_t>("tensor type");
  t.type = static_cast<GgmlType>(type);
  t.offset = r.Get<std::uint64_t>("tensor offset");
  t.bytes = GgmlTensorBytes(type, t.dims, r.file() + ": " + where);
  return t;
}

// Offsets aligned, inside the data section, not overlapping.
void CheckTensorPlacement(const GgufHeader& h, std::uint64_t file_size, const std::string& file) {
  std::vector<std::pair<std::uint64_t, std::uint64_t>> spans;
  for (const auto& t : h.tensors) {
    const std::string where = "tensor '" + Printable(t.name) + "'";
    if (t.offset % h.alignment != 0)
      Fail(file, where + ": offset " + std::to_string(t.offset) + " is not aligned");
    const std::uint64_t room = file_size - h.data_offset;
    if (t.offset > room || t.bytes > room - t.offset) {
      Fail(file, where + ": its " + std::to_string(t.bytes) + " bytes at offset " +
                     std::to_string(t.offset) + " lie past the end of the file");
    }
    spans.emplace_back(t.offset, t.offset + t.bytes);
  }
  std::sort(spans.begin(), spans.end());
  for (std::size_t i = 1; i < spans.size(); ++i) {
    if (spans[i].first < spans[i - 1].second) Fail(file, "two tensors overlap in the data section");
  }
}

}  // namespace

GgufValue GgufValue::U32(std::uint32_t v) { return {GgufValueType::kU32, {}, {double(v)}, {}}; }
GgufValue GgufValue::I32(std::int32_t v) { return {GgufValueType::kI32, {}, {double(v)}, {}}; }
GgufValue GgufValue::F32(float v) { return {GgufValueType::kF32, {}, {double(v)}, {}}; }
GgufValue GgufValue::Bool(bool v) { return {GgufValueType::kBool, {}, {v ? 1.0 : 0.0}, {}}; }
GgufValue GgufValue::String(std::string v) {
  return {GgufValueType::kString, {}, {}, {std::move(v)}};
}
GgufValue GgufValue::Strings(std::vector<std::string> v) {
  return {GgufValueType::kArray, GgufValueType::kString, {}, std::move(v)};
}
GgufValue GgufValue::Numbers(GgufValueType element, std::vector<double> v) {
  return {GgufValueType::kArray, element, std::move(v), {}};
}

void GgufMetadata::Set(const std::string& key, GgufValue value) {
  for (auto& [k, v] : entries) {
    if (k == key) {
      v = std::move(value);
      return;
    }
  }
  entries.emplace_back(key, std::move(value));
}

const GgufValue* GgufMetadata::Find(std::string_view key) const {
  for (const auto& [k, v] : entries) {
    if (k == key) return &v;
  }
  return nullptr;
}

std::optional<std::string> GgufMetadata::String(std::string_view key) const {
  const GgufValue* v = Find(key);
  if (v == nullptr || v->type != GgufValueType::kString) return std::nullopt;
  return v->strings.at(0);
}

std::optional<double> GgufMetadata::Number(std::string_view key) const {
  const GgufValue* v = Find(key);
  if (v == nullptr || v->IsArray() || v->type == GgufValueType::kString) return std::nullopt;
  return v->numbers.at(0);
}

const char* GgmlTypeName(std::uint32_t type) {
  const TypeTraits* t = FindType(type);
  return t ? t->name : nullptr;
}

std::uint64_t GgmlTensorBytes(std::uint32_t type, const std::vector<std::uint64_t>& dims,
                              const std::string& where) {
  const TypeTraits* t = FindType(type);
  if (t == nullptr) Fail(where, "unknown ggml type " + std::to_string(type));
  if (dims.empty() || dims[0] % t->block != 0) {
    Fail(where, "rows of " + std::to_string(dims.empty() ? 0 : dims[0]) +
                    " elements do not divide into " + t->name + " blocks of " +
                    std::to_string(t->block));
  }
  std::uint64_t bytes = dims[0] / t->block * t->bytes;
  for (std::size_t i = 1; i < dims.size(); ++i) {
    if (dims[i] != 0 && bytes > (std::uint64_t{1} << 62) / dims[i]) Fail(where, "size overflows");
    bytes *= dims[i];
  }
  return bytes;
}

GgufHeader ParseGgufHeader(std::string_view file, const std::string& file_name) {
  Reader r(file, file_name);
  if (file.size() < 4 || std::memcmp(file.data(), kMagic, 4) != 0)
    Fail(file_name, "not a GGUF file (no 'GGUF' magic)");
  r.Take(4, "magic");
  GgufHeader h;
  h.version = r.Get<std::uint32_t>("version");
  if (h.version != 2 && h.version != 3)
    Fail(file_name, "GGUF version " + std::to_string(h.version) + " (kvfold reads 2 and 3)");
  const auto tensor_count = r.Get<std::uint64_t>("tensor count");
  const auto kv_count = r.Get<std::uint64_t>("metadata count");
  // A key/value takes at least 8 (key length) + 4 (type) + 1 bytes; a tensor 8 + 4 + 8 + 4 + 8.
  r.RequireRoom(kv_count, 13, "metadata count");
  std::set<std::string> keys;
  for (std::uint64_t i = 0; i < kv_count; ++i) {
    std::string key = r.GetString("metadata key");
    if (!keys.insert(key).second) Fail(file_name, "metadata key '" + Printable(key) + "' twice");
    GgufValue v = GetValue(r, key);
    h.metadata.entries.emplace_back(std::move(key), std::move(v));
  }
  r.RequireRoom(tensor_count, 32, "tensor count");
  std::set<std::string> names;
  for (std::uint64_t i = 0; i < tensor_count; ++i) {
    h.tensors.push_back(GetTensorInfo(r));
    if (!names.insert(h.tensors.back().name).second)
      Fail(file_name, "tensor '" + Printable(h.tensors.back().name) + "' twice");
  }
  if (const GgufValue* a = h.metadata.Find("general.alignment")) {
    const double n = a->IsArray() || a->numbers.empty() ? 0 : a->numbers[0];
    if (a->type != GgufValueType::kU32 || n < 1 || n > 65536 ||
        (static_cast<std::uint64_t>(n) & (static_cast<std::uint64_t>(n) - 1)) != 0) {
      Fail(file_name, "general.alignment must be a power of two up to 65536 (uint32)");
    }
    h.alignment = static_cast<std::uint64_t>(n);
  }
  h.data_offset = AlignUp(r.pos(), h.alignment);
  if (h.data_offset > file.size()) Fail(file_name, "truncated: no data section");
  CheckTensorPlacement(h, file.size(), file_name);
  return h;
}

// ---- writing ----

GgufWriter::GgufWriter(std::string path, std::uint64_t header_reserve)
    : path_(std::move(path)), reserve_(AlignUp(std::max<std::uint64_t>(header_reserve, 64), 32)) {
  file_ = std::make_unique<AtomicFile>(path_);
  const std::string zeros(static_cast<std::size_t>(std::min<std::uint64_t>(reserve_, 1 << 20)), 0);
  for (std::uint64_t left = reserve_; left > 0;) {
    const std::size_t n = static_cast<std::size_t>(std::min<std::uint64_t>(left, zeros.size()));
    file_->Write(zeros.data(), n);
    left -= n;
  }
}

GgufWriter::~GgufWriter() = default;

void GgufWriter::AddTensor(const std::string& name, GgmlType type,
                           std::vector<std::uint64_t> dims) {
  CloseTensor();
  if (name.empty() || name.size() > kGgufMaxNameBytes)
    Fail(path_, "tensor name '" + name + "' is longer than GGUF's 63 bytes");
  for (const auto& t : tensors_) {
    if (t.name == name) Fail(path_, "internal error: tensor '" + name + "' written twice");
  }
  GgufTensorInfo t;
  t.name = name;
  t.type = type;
  t.dims = std::move(dims);
  t.bytes = GgmlTensorBytes(static_cast<std::uint32_t>(type), t.dims, path_ + ": " + name);
  const std::uint64_t aligned = AlignUp(written_, 32);
  const std::string pad(static_cast<std::size_t>(aligned - written_), '\0');
  file_->Write(pad);
  written_ = aligned;
  t.offset = written_;
  open_left_ = t.bytes;
  tensors_.push_back(std::move(t));
}

void GgufWriter::Write(std::string_view bytes) {
  if (bytes.size() > open_left_) {
    Fail(path_, "internal error: more bytes than tensor '" +
                    (tensors_.empty() ? std::string() : tensors_.back().name) + "' holds");
  }
  file_->Write(bytes);
  open_left_ -= bytes.size();
  written_ += bytes.size();
}

void GgufWriter::CloseTensor() {
  if (open_left_ != 0) {
    Fail(path_, "internal error: tensor '" + tensors_.back().name + "' is " +
                    std::to_string(open_left_) + " bytes short");
  }
}

std::uint64_t GgufWriter::TensorInfoBytes(const std::string& name, std::size_t dims) {
  return 8 + name.size() + 4 + 8 * dims + 4 + 8;
}

std::uint64_t GgufWriter::MetadataBytes(const GgufMetadata& metadata) {
  std::string out;
  for (const auto& [key, value] : metadata.entries) {
    PutString(out, key);
    PutValue(out, value);
  }
  return out.size();
}

std::string GgufWriter::Header(const GgufMetadata& metadata, std::uint64_t padding) const {
  std::string out(kMagic, 4);
  Put<std::uint32_t>(out, 3);
  Put<std::uint64_t>(out, tensors_.size());
  Put<std::uint64_t>(out, metadata.entries.size() + 1);
  for (const auto& [key, value] : metadata.entries) {
    PutString(out, key);
    PutValue(out, value);
  }
  PutString(out, kPaddingKey);
  PutValue(out, GgufValue::String(std::string(static_cast<std::size_t>(padding), ' ')));
  for (const auto& t : tensors_) PutTensorInfo(out, t);
  return out;
}

void GgufWriter::Finish(const GgufMetadata& metadata) {
  CloseTensor();
  if (metadata.Find(kPaddingKey) || metadata.Find("general.alignment"))
    Fail(path_, "internal error: reserved metadata key");
  const std::uint64_t bare = Header(metadata, 0).size();
  if (bare <= reserve_) {
    file_->Overwrite(0, Header(metadata, reserve_ - bare).data(), reserve_);
    file_->Commit();
    finished_ = true;
    return;
  }
  // The header outgrew its reserve: write it into a new file and move the data behind it.
  const std::uint64_t start = AlignUp(bare, 32);
  file_->Flush();
  auto moved = std::make_unique<AtomicFile>(path_);
  moved->Write(Header(metadata, start - bare));
  const int fd = ::open(file_->temp_path().c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) Fail(path_, "cannot read back its own temporary file");
  std::string chunk(std::size_t{16} << 20, '\0');
  try {
    for (std::uint64_t done = 0; done < written_;) {
      const std::size_t n =
          static_cast<std::size_t>(std::min<std::uint64_t>(written_ - done, chunk.size()));
      ReadAt(fd, chunk.data(), n, reserve_ + done, path_);
      moved->Write(chunk.data(), n);
      done += n;
    }
  } catch (...) {
    ::close(fd);
    throw;
  }
  ::close(fd);
  moved->Commit();
  file_.reset();  // removes the first temporary file
  finished_ = true;
}

}  // namespace kvfold
