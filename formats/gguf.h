// GGUF (version 3), the file format of llama.cpp and ggml: a header of typed key/value metadata
// and tensor descriptions, then the tensor data, each tensor aligned to `general.alignment`
// (default 32) from the start of the data section. All integers are little-endian.
//
// Reading a header is untrusted input like a safetensors header: every count, length, offset and
// size is checked against the file before it is used (ParseGgufHeader). Writing is streamed:
// GgufWriter takes tensors one at a time, in pieces, and writes the header last into space set
// aside at the start of the file, so a model never has to be held to be written.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace kvfold {

class AtomicFile;

enum class GgufValueType : std::uint32_t {
  kU8 = 0,
  kI8 = 1,
  kU16 = 2,
  kI16 = 3,
  kU32 = 4,
  kI32 = 5,
  kF32 = 6,
  kBool = 7,
  kString = 8,
  kArray = 9,
  kU64 = 10,
  kI64 = 11,
  kF64 = 12,
};

// One metadata value. Scalars hold one element; arrays hold `element` values of one type (GGUF
// has no arrays of arrays here: the reader refuses them). Numbers are kept as double, exact for
// every integer kvfold writes or reads (token ids, sizes below 2^53).
struct GgufValue {
  GgufValueType type = GgufValueType::kU32;
  GgufValueType element = GgufValueType::kU8;  // arrays only
  std::vector<double> numbers;                 // numeric and bool scalars and arrays
  std::vector<std::string> strings;            // strings and arrays of strings

  static GgufValue U32(std::uint32_t v);
  static GgufValue I32(std::int32_t v);
  static GgufValue F32(float v);
  static GgufValue Bool(bool v);
  static GgufValue String(std::string v);
  static GgufValue Strings(std::vector<std::string> v);
  static GgufValue Numbers(GgufValueType element, std::vector<double> v);

  bool IsArray() const { return type == GgufValueType::kArray; }
  std::size_t size() const { return numbers.size() + strings.size(); }
};

struct GgufMetadata {
  std::vector<std::pair<std::string, GgufValue>> entries;  // written in this order

  void Set(const std::string& key, GgufValue value);  // replaces a key already set
  const GgufValue* Find(std::string_view key) const;
  // The value of `key` as a string / number, or nullopt when it is absent or of another type.
  std::optional<std::string> String(std::string_view key) const;
  std::optional<double> Number(std::string_view key) const;
};

// ggml's tensor types that kvfold writes or recognises when reading.
enum class GgmlType : std::uint32_t {
  kF32 = 0,
  kF16 = 1,
  kQ4_0 = 2,
  kQ4_1 = 3,
  kQ5_0 = 6,
  kQ5_1 = 7,
  kQ8_0 = 8,
  kQ8_1 = 9,
  kQ2_K = 10,
  kQ3_K = 11,
  kQ4_K = 12,
  kQ5_K = 13,
  kQ6_K = 14,
  kQ8_K = 15,
  kIQ4_NL = 20,
  kI8 = 24,
  kI16 = 25,
  kI32 = 26,
  kI64 = 27,
  kF64 = 28,
  kBF16 = 30,
};

// "F32", "Q8_0", ...; nullptr for a type id kvfold does not know.
const char* GgmlTypeName(std::uint32_t type);

struct GgufTensorInfo {
  std::string name;
  std::vector<std::uint64_t> dims;  // ggml order: dims[0] is the innermost (HF's last) dimension
  GgmlType type = GgmlType::kF32;
  std::uint64_t offset = 0;  // from the start of the data section
  std::uint64_t bytes = 0;   // computed from dims and type
};

struct GgufHeader {
  std::uint32_t version = 3;
  GgufMetadata metadata;
  std::vector<GgufTensorInfo> tensors;  // in file order
  std::uint64_t alignment = 32;
  std::uint64_t data_offset = 0;  // where the data section starts in the file
};

constexpr std::size_t kGgufMaxNameBytes = 63;  // ggml's GGML_MAX_NAME (64) less the NUL
constexpr std::size_t kGgufMaxDims = 4;        // GGML_MAX_DIMS

// The bytes a tensor of `type` and `dims` occupies; throws Error naming `where` for an unknown
// type, a row length (dims[0]) not divisible by the type's block, or an overflow.
std::uint64_t GgmlTensorBytes(std::uint32_t type, const std::vector<std::uint64_t>& dims,
                              const std::string& where);

// Parses the header of the GGUF file `file` (its whole mapped contents): magic, version 2 or 3,
// every key/value (strings and arrays bounded by the bytes left, no duplicate keys, no nested
// arrays), every tensor (name at most 63 bytes and unique, 1-4 dimensions, a known type, offsets
// aligned, inside the file and not overlapping). Throws Error("<file_name>: ...").
GgufHeader ParseGgufHeader(std::string_view file, const std::string& file_name);

// A GGUF file written as its tensors become ready: AddTensor declares the next tensor, Write
// appends its bytes (in as many pieces as the caller likes); Finish writes the header into the
// space set aside at the start and commits the file atomically (formats/atomic_file.h). When the
// header outgrows that space the data is moved once, so the reserve is a guess, not a limit. The
// header's unused space is filled by a metadata string `kvfold.padding`, so that the data
// section starts exactly where the reserve ends.
class GgufWriter {
 public:
  GgufWriter(std::string path, std::uint64_t header_reserve);
  ~GgufWriter();  // removes the file unless Finish() succeeded
  GgufWriter(const GgufWriter&) = delete;
  GgufWriter& operator=(const GgufWriter&) = delete;

  void AddTensor(const std::string& name, GgmlType type, std::vector<std::uint64_t> dims);
  void Write(std::string_view bytes);
  void Finish(const GgufMetadata& metadata);

  // Header bytes one tensor description takes.
  static std::uint64_t TensorInfoBytes(const std::string& name, std::size_t dims);
  // Header bytes of `metadata` (without the padding key).
  static std::uint64_t MetadataBytes(const GgufMetadata& metadata);

 private:
  void CloseTensor();
  std::string Header(const GgufMetadata& metadata, std::uint64_t padding) const;
  std::string path_;
  std::uint64_t reserve_;
  std::unique_ptr<AtomicFile> file_;
  std::vector<GgufTensorInfo> tensors_;
  std::uint64_t written_ = 0;  // data bytes written so far (with alignment padding)
  std::uint64_t open_left_ = 0;
  bool finished_ = false;
};

}  // namespace kvfold
