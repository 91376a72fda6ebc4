#include "calib/calibration_input.h"

#include <cstring>
#include <nlohmann/json.hpp>

#include "calib/text.h"
#include "calib/tokenizer.h"
#include "formats/error.h"
#include "formats/mapped_file.h"
#include "formats/sha256.h"

namespace kvfold {
namespace {

bool EndsWith(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() &&
         s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

void AppendId(const std::string& where, std::int64_t id, std::int64_t vocab,
              std::vector<std::int32_t>& out) {
  if (id < 0 || id >= vocab) {
    Fail(where, "token id " + std::to_string(id) + " is outside the model's vocabulary of " +
                    std::to_string(vocab));
  }
  out.push_back(static_cast<std::int32_t>(id));
}

// The ids of one JSON Lines value, or nullptr when it is a document.
const nlohmann::json* IdList(const nlohmann::json& v) {
  if (v.is_array()) return &v;
  for (const char* key : {"input_ids", "ids"}) {
    if (v.is_object() && v.contains(key) && v[key].is_array()) return &v[key];
  }
  return nullptr;
}

void ReadJsonLines(const std::string& path, const std::string& bytes, const Tokenizer& tokenizer,
                   std::int64_t vocab, CalibrationTokens& out) {
  if (const auto bad = FindInvalidUtf8(bytes))
    Fail(path, "invalid UTF-8 at byte " + std::to_string(*bad));
  std::size_t line_start = 0;
  for (int line = 1; line_start < bytes.size(); ++line) {
    std::size_t end = bytes.find('\n', line_start);
    if (end == std::string::npos) end = bytes.size();
    const std::string text = bytes.substr(line_start, end - line_start);
    line_start = end + 1;
    if (text.find_first_not_of(" \t\r") == std::string::npos) continue;
    const std::string where = path + ": line " + std::to_string(line);
    nlohmann::json v;
    try {
      v = nlohmann::json::parse(text);
    } catch (const nlohmann::json::exception&) {
      Fail(where, "not valid JSON");
    }
    const nlohmann::json* ids = IdList(v);
    const std::string format = ids ? "jsonl-ids" : "jsonl-text";
    if (!out.format.empty() && out.format != format)
      Fail(where, "mixes documents and token ids; use one form per file");
    out.format = format;
    if (ids) {
      for (const auto& id : *ids) {
        if (!id.is_number_integer()) Fail(where, "token ids must be integers");
        AppendId(where, id.get<std::int64_t>(), vocab, out.tokens);
      }
    } else if (v.is_object() && v.contains("text") && v["text"].is_string()) {
      const std::vector<std::int32_t> encoded = tokenizer.Encode(v["text"].get<std::string>());
      out.tokens.insert(out.tokens.end(), encoded.begin(), encoded.end());
    } else {
      Fail(where,
           "expected {\"text\": \"...\"}, {\"input_ids\": [...]}, {\"ids\": [...]} or a list of "
           "ids");
    }
  }
  if (out.format.empty()) Fail(path, "no lines with text or token ids");
}

template <typename T>
std::int64_t Element(const char* p) {  // little-endian on every machine kvfold runs on (x86-64)
  T x;
  std::memcpy(&x, p, sizeof x);
  return static_cast<std::int64_t>(x);
}

// NumPy's .npy: magic, version, a little header dict, then the array in C order.
void ReadNpy(const std::string& path, const std::string& bytes, std::int64_t vocab,
             CalibrationTokens& out) {
  out.format = "npy";
  if (bytes.size() < 10 || bytes.compare(0, 6, "\x93NUMPY") != 0)
    Fail(path, "not a NumPy .npy file (bad magic)");
  const auto major = static_cast<unsigned char>(bytes[6]);
  std::size_t header_len = 0, offset = 0;
  if (major == 1) {
    header_len = static_cast<unsigned char>(bytes[8]) |
                 (static_cast<std::size_t>(static_cast<unsigned char>(bytes[9])) << 8);
    offset = 10;
  } else if ((major == 2 || major == 3) && bytes.size() >= 12) {
    for (int i = 3; i >= 0; --i)
      header_len = (header_len << 8) | static_cast<unsigned char>(bytes[8 + i]);
    offset = 12;
  } else {
    Fail(path, ".npy format version " + std::to_string(major) + " is not supported");
  }
  if (offset + header_len > bytes.size()) Fail(path, ".npy header runs past the end of the file");
  const std::string header = bytes.substr(offset, header_len);
  auto field = [&](const std::string& key) {
    const auto at = header.find("'" + key + "'");
    if (at == std::string::npos) Fail(path, ".npy header has no '" + key + "'");
    return header.substr(header.find(':', at) + 1);
  };
  const std::string descr_field = field("descr");
  const auto q1 = descr_field.find('\''), q2 = descr_field.find('\'', q1 + 1);
  const std::string descr = descr_field.substr(q1 + 1, q2 - q1 - 1);
  const std::string order = field("fortran_order");
  if (order.find("True") < order.find_first_of(",}")) {
    Fail(path,
         ".npy array in Fortran order is not supported (save it with numpy's default C order)");
  }
  std::size_t width = 0;
  bool is_signed = true;
  if (descr == "<i4")
    width = 4;
  else if (descr == "<i8")
    width = 8;
  else if (descr == "<i2")
    width = 2;
  else if (descr == "<u2")
    width = 2, is_signed = false;
  else if (descr == "<u4")
    width = 4, is_signed = false;
  else
    Fail(path,
         ".npy dtype '" + descr + "' is not token ids (expected little-endian int32 or int64)");
  const std::string shape = field("shape");
  std::int64_t count = 1;
  for (std::size_t i = shape.find('(') + 1; i < shape.find(')');) {
    const std::size_t next = shape.find_first_of(",)", i);
    const std::string dim = shape.substr(i, next - i);
    if (dim.find_first_not_of(" ") != std::string::npos) count *= std::stoll(dim);
    i = next + 1;
  }
  const std::size_t data = offset + header_len;
  if (bytes.size() - data != static_cast<std::size_t>(count) * width) {
    Fail(path, ".npy data holds " + std::to_string((bytes.size() - data) / width) +
                   " elements, its shape says " + std::to_string(count));
  }
  for (std::int64_t i = 0; i < count; ++i) {
    const char* p = bytes.data() + data + static_cast<std::size_t>(i) * width;
    const std::int64_t v =
        width == 2   ? (is_signed ? Element<std::int16_t>(p) : Element<std::uint16_t>(p))
        : width == 4 ? (is_signed ? Element<std::int32_t>(p) : Element<std::uint32_t>(p))
                     : Element<std::int64_t>(p);
    AppendId(path + ": element " + std::to_string(i), v, vocab, out.tokens);
  }
}

}  // namespace

CalibrationTokens LoadCalibrationTokens(const std::string& path, const Tokenizer& tokenizer,
                                        std::int64_t vocab_size) {
  CalibrationTokens out;
  if (EndsWith(path, ".jsonl") || EndsWith(path, ".npy")) {
    const std::string bytes = ReadFileToString(path);
    if (bytes.empty()) Fail(path, "empty file");
    out.sha256 = Sha256Hex(bytes);
    if (EndsWith(path, ".npy"))
      ReadNpy(path, bytes, vocab_size, out);
    else
      ReadJsonLines(path, bytes, tokenizer, vocab_size, out);
    return out;
  }
  const std::string text = LoadText(path);
  out.sha256 = Sha256Hex(text);
  out.tokens = tokenizer.Encode(text);
  out.format = "text";
  return out;
}

}  // namespace kvfold
