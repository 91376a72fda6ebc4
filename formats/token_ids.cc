#include "formats/token_ids.h"

#include <algorithm>
#include <cctype>
#include <cstring>
#include <limits>
#include <nlohmann/json.hpp>
#include <optional>

#include "formats/error.h"

namespace kvfold {
namespace {

// Ids are int32 in kvfold, so no vocabulary reaches past 2^31.
std::int64_t IdLimit(std::int64_t vocab) {
  return std::min<std::int64_t>(vocab, std::int64_t{1} << 31);
}

std::string OutsideVocabulary(const std::string& written, std::int64_t vocab) {
  return "token id " + written + " is outside the model's vocabulary of " + std::to_string(vocab);
}

// `s` for an error message, cut to 32 characters (a hostile header may be 4 GiB long).
std::string Shown(std::string_view s) {
  return s.size() <= 32 ? std::string(s) : std::string(s.substr(0, 32)) + "...";
}

// ---- NumPy .npy ----

struct NpyHeader {
  std::string descr;
  bool fortran_order = false;
  std::vector<std::uint64_t> shape;
};

constexpr const char* kShapeForm =
    "'shape' must be a tuple of non-negative integers, like (6,) or (2, 3)";

// The header's Python dict literal, read left to right; anything else is refused.
class NpyHeaderParser {
 public:
  NpyHeaderParser(std::string_view text, const std::string& file)
      : text_(text), where_(file + ": .npy header") {}
  NpyHeader Parse();

 private:
  [[noreturn]] void Refuse(const std::string& what) const { Fail(where_, what); }
  char Peek() {  // the next character after white space, or '\0' at the end
    while (pos_ < text_.size() && std::strchr(" \t\r\n", text_[pos_]) != nullptr) ++pos_;
    return pos_ < text_.size() ? text_[pos_] : '\0';
  }
  bool Take(char c) { return Peek() == c && (++pos_, true); }
  void Expect(char c, const char* what) {
    if (!Take(c)) Refuse(std::string("expected ") + what + At());
  }
  std::string At() const {
    return pos_ < text_.size() ? " at byte " + std::to_string(pos_) : " at the end of the header";
  }
  std::string String();
  bool Bool();
  std::uint64_t Dimension();
  std::vector<std::uint64_t> Shape();

  std::string_view text_;
  std::size_t pos_ = 0;
  std::string where_;
};

NpyHeader NpyHeaderParser::Parse() {
  NpyHeader h;
  std::vector<std::string> seen;
  Expect('{', "'{' (the header is a Python dict)");
  while (!Take('}')) {
    const std::string key = String();
    if (std::find(seen.begin(), seen.end(), key) != seen.end())
      Refuse("'" + Shown(key) + "' is given twice");
    seen.push_back(key);
    Expect(':', "':'");
    if (key == "descr")
      h.descr = String();
    else if (key == "fortran_order")
      h.fortran_order = Bool();
    else if (key == "shape")
      h.shape = Shape();
    else
      Refuse("unknown key '" + Shown(key) +
             "' (a .npy header has 'descr', 'fortran_order', 'shape')");
    if (!Take(',')) {
      Expect('}', "',' or '}'");
      break;
    }
  }
  Peek();
  if (pos_ != text_.size()) Refuse("text after the closing '}' at byte " + std::to_string(pos_));
  for (const char* key : {"descr", "fortran_order", "shape"}) {
    if (std::find(seen.begin(), seen.end(), key) == seen.end())
      Refuse(std::string("has no '") + key + "'");
  }
  return h;
}

// A string in single or double quotes; NumPy writes no escapes, so none is read.
std::string NpyHeaderParser::String() {
  const char quote = Peek();
  if (quote != '\'' && quote != '"') Refuse("expected a quoted string" + At());
  const std::size_t begin = ++pos_;
  const std::size_t end = text_.find_first_of(std::string{quote, '\\', '\n'}, begin);
  if (end == std::string_view::npos || text_[end] != quote)
    Refuse("unterminated or escaped string at byte " + std::to_string(begin - 1));
  pos_ = end + 1;
  return std::string(text_.substr(begin, end - begin));
}

bool NpyHeaderParser::Bool() {
  for (const bool value : {true, false}) {
    const std::string_view word = value ? "True" : "False";
    if (Peek() == word[0] && text_.substr(pos_, word.size()) == word) {
      const std::size_t after = pos_ + word.size();
      if (after < text_.size() &&
          (std::isalnum(static_cast<unsigned char>(text_[after])) || text_[after] == '_'))
        break;
      pos_ = after;
      return value;
    }
  }
  Refuse("'fortran_order' must be True or False");
}

constexpr std::uint64_t kMaxDimension = std::numeric_limits<std::int64_t>::max();

// A decimal integer below 2^63; a sign, a fraction, an exponent or a suffix is refused.
std::uint64_t NpyHeaderParser::Dimension() {
  if (Peek() == '-') Refuse("'shape' has a negative dimension");
  if (!std::isdigit(static_cast<unsigned char>(Peek()))) Refuse(kShapeForm);
  std::uint64_t d = 0;
  for (; pos_ < text_.size() && std::isdigit(static_cast<unsigned char>(text_[pos_])); ++pos_) {
    const auto digit = static_cast<std::uint64_t>(text_[pos_] - '0');
    if (d > (kMaxDimension - digit) / 10) Refuse("'shape' has a dimension of 2^63 or more");
    d = d * 10 + digit;
  }
  if (pos_ < text_.size() && (std::isalnum(static_cast<unsigned char>(text_[pos_])) ||
                              text_[pos_] == '.' || text_[pos_] == '_'))
    Refuse(kShapeForm);
  return d;
}

// A Python tuple: (), (n,), (n, m) or (n, m,); (n) is an int, not a tuple, and is refused.
std::vector<std::uint64_t> NpyHeaderParser::Shape() {
  if (!Take('(')) Refuse(kShapeForm);
  std::vector<std::uint64_t> shape;
  if (Take(')')) return shape;
  for (;;) {
    shape.push_back(Dimension());
    if (Take(')')) {
      if (shape.size() == 1) Refuse("'shape' (n) is a number, not a tuple: write (n,)");
      return shape;
    }
    if (!Take(',')) Refuse(kShapeForm);
    if (Take(')')) return shape;
  }
}

struct NpyLayout {
  std::string_view header;
  std::size_t data_offset = 0;
};

// The magic, the version and the header length (2 bytes in 1.0, 4 in 2.0 and 3.0).
NpyLayout ReadPreamble(std::string_view bytes, const std::string& file) {
  if (bytes.size() < 10 || bytes.substr(0, 6) != std::string_view("\x93NUMPY", 6))
    Fail(file, "not a NumPy .npy file (bad magic)");
  const unsigned major = static_cast<unsigned char>(bytes[6]);
  const unsigned minor = static_cast<unsigned char>(bytes[7]);
  if (major < 1 || major > 3 || minor != 0) {
    Fail(file, ".npy format version " + std::to_string(major) + "." + std::to_string(minor) +
                   " is not supported (1.0, 2.0 and 3.0 are)");
  }
  const std::size_t length_bytes = major == 1 ? 2 : 4;
  const std::size_t offset = 8 + length_bytes;
  if (bytes.size() < offset) Fail(file, ".npy header runs past the end of the file");
  std::size_t header_len = 0;
  for (std::size_t i = length_bytes; i-- > 0;)
    header_len = (header_len << 8) | static_cast<unsigned char>(bytes[8 + i]);
  if (header_len > bytes.size() - offset) Fail(file, ".npy header runs past the end of the file");
  return {bytes.substr(offset, header_len), offset + header_len};
}

struct NpyDtype {
  std::size_t width = 0;
  bool is_signed = true;
};

NpyDtype TokenDtype(const std::string& descr, const std::string& file) {
  if (descr == "<i2") return {2, true};
  if (descr == "<u2") return {2, false};
  if (descr == "<i4") return {4, true};
  if (descr == "<u4") return {4, false};
  if (descr == "<i8") return {8, true};
  Fail(file, ".npy dtype '" + Shown(descr) +
                 "' is not token ids (expected little-endian int32 or int64)");
}

// The array's byte size, overflow-checked: a shape of (2^62 + 2,) must not wrap around to 8.
std::uint64_t ArrayBytes(const std::vector<std::uint64_t>& shape, std::size_t width,
                         const std::string& file) {
  std::uint64_t n = width;
  for (const std::uint64_t d : shape) {
    if (__builtin_mul_overflow(n, d, &n))
      Fail(file, ".npy shape is too large (its size in bytes overflows 64 bits)");
  }
  return n;
}

template <typename T>
std::int64_t Load(const char* p) {  // little-endian on every machine kvfold runs on (x86-64)
  T x;
  std::memcpy(&x, p, sizeof x);
  return static_cast<std::int64_t>(x);
}

std::int64_t ReadElement(const char* p, NpyDtype t) {
  if (t.width == 2) return t.is_signed ? Load<std::int16_t>(p) : Load<std::uint16_t>(p);
  if (t.width == 4) return t.is_signed ? Load<std::int32_t>(p) : Load<std::uint32_t>(p);
  return Load<std::int64_t>(p);
}

// ---- JSON Lines ----

// One JSON Lines value, read as parser events so that a number that is not an id is reported as
// written (a parsed value keeps 1e3 only as 1000.0). It keeps what a parsed value would give: the
// top-level list, the object's "input_ids", "ids" and "text" (the last value of a repeated key).
class LineValue : public nlohmann::json_sax<nlohmann::json> {
 public:
  struct IdList {
    bool present = false;
    std::vector<std::int32_t> ids;
    std::string problem;  // about the first element that is not an id
  };

  explicit LineValue(std::int64_t vocab) : vocab_(vocab), limit_(IdLimit(vocab)) {}

  // The ids of the line, or nullptr when it is not an id list.
  const IdList* Ids() const {
    if (top_ == Top::kList) return &bare_;
    if (top_ == Top::kObject && input_ids_.present) return &input_ids_;
    if (top_ == Top::kObject && ids_.present) return &ids_;
    return nullptr;
  }
  const std::optional<std::string>& text() const { return text_; }

  bool null() override { return NotId("null"); }
  bool boolean(bool v) override { return NotId(v ? "true" : "false"); }
  bool number_integer(number_integer_t v) override {
    return Id(v >= 0 && v < limit_, v, std::to_string(v));
  }
  bool number_unsigned(number_unsigned_t v) override {
    const bool in = v < static_cast<std::uint64_t>(limit_);
    return Id(in, in ? static_cast<std::int64_t>(v) : 0, std::to_string(v));
  }
  bool number_float(number_float_t, const string_t& written) override {
    if (written.find_first_not_of("-0123456789") == std::string::npos)  // beyond 64 bits
      return Id(false, 0, written);
    return NotId(written);
  }
  bool string(string_t& s) override {
    const bool listed = Reading();
    const std::string written = listed ? nlohmann::json(s).dump() : std::string();
    if (depth_ == 1 && top_ == Top::kObject && key_ == "text") text_ = std::move(s);
    return listed ? NotId(written) : Skip();
  }
  bool binary(binary_t&) override { return NotId("binary"); }  // never in JSON text
  bool start_object(std::size_t) override { return Open(Top::kObject, "{...}"); }
  bool key(string_t& k) override;
  bool end_object() override { return Close(); }
  bool start_array(std::size_t) override;
  bool end_array() override { return Close(); }
  bool parse_error(std::size_t, const std::string&, const nlohmann::json::exception&) override {
    return false;
  }

 private:
  enum class Top { kNone, kList, kObject, kOther };

  // Whether the next value is an element of an id list with no problem so far.
  bool Reading() const {
    return list_ != nullptr && depth_ == list_depth_ && list_->problem.empty();
  }
  bool Skip() {
    if (depth_ == 0) top_ = Top::kOther;
    return true;
  }
  bool Id(bool in_vocabulary, std::int64_t id, const std::string& written) {
    if (!Reading()) return Skip();
    if (in_vocabulary)
      list_->ids.push_back(static_cast<std::int32_t>(id));
    else
      list_->problem = OutsideVocabulary(Shown(written), vocab_);
    return true;
  }
  bool NotId(const std::string& written) {
    if (Reading()) list_->problem = "token id " + Shown(written) + " is not an integer";
    return Skip();
  }
  bool Open(Top top, const char* written) {
    if (depth_ == 0) top_ = top;
    if (depth_ > 0) NotId(written);
    ++depth_;
    return true;
  }
  bool Close() {
    if (list_ != nullptr && depth_ == list_depth_) list_ = nullptr;
    --depth_;
    return true;
  }

  std::int64_t vocab_, limit_;
  Top top_ = Top::kNone;
  IdList bare_, input_ids_, ids_;
  std::optional<std::string> text_;
  std::size_t depth_ = 0;   // open lists and objects
  std::string key_;         // the last key of the top-level object
  IdList* list_ = nullptr;  // the id list being read; its elements are at list_depth_
  std::size_t list_depth_ = 0;
};

bool LineValue::key(string_t& k) {
  if (depth_ != 1 || top_ != Top::kObject) return true;
  key_ = k;
  if (k == "text") text_.reset();  // a repeated key keeps its last value
  if (k == "input_ids") input_ids_ = IdList{};
  if (k == "ids") ids_ = IdList{};
  return true;
}

bool LineValue::start_array(std::size_t) {
  IdList* list = nullptr;
  if (depth_ == 0) list = &bare_;
  if (depth_ == 1 && top_ == Top::kObject && key_ == "input_ids") list = &input_ids_;
  if (depth_ == 1 && top_ == Top::kObject && key_ == "ids") list = &ids_;
  Open(Top::kList, "[...]");
  if (list != nullptr) {
    list->present = true;
    list_ = list;
    list_depth_ = depth_;
  }
  return true;
}

const char* const kExpectedLine =
    "expected {\"text\": \"...\"}, {\"input_ids\": [...]}, {\"ids\": [...]} or a list of ids";

}  // namespace

std::vector<std::int32_t> ParseNpyTokenIds(std::string_view bytes, std::int64_t vocab_size,
                                           const std::string& file) {
  const NpyLayout layout = ReadPreamble(bytes, file);
  const NpyHeader header = NpyHeaderParser(layout.header, file).Parse();
  if (header.fortran_order) {
    Fail(file,
         ".npy array in Fortran order is not supported (save it with numpy's default C order)");
  }
  const NpyDtype dtype = TokenDtype(header.descr, file);
  const std::uint64_t need = ArrayBytes(header.shape, dtype.width, file);
  const std::uint64_t have = bytes.size() - layout.data_offset;
  if (have % dtype.width != 0) {
    Fail(file, ".npy data holds " + std::to_string(have) + " bytes, not a whole number of " +
                   std::to_string(dtype.width) + "-byte elements");
  }
  if (have != need) {
    Fail(file, ".npy data holds " + std::to_string(have / dtype.width) +
                   " elements, its shape says " + std::to_string(need / dtype.width));
  }
  const std::int64_t limit = IdLimit(vocab_size);
  std::vector<std::int32_t> ids(need / dtype.width);
  for (std::size_t i = 0; i < ids.size(); ++i) {
    const std::int64_t v = ReadElement(bytes.data() + layout.data_offset + i * dtype.width, dtype);
    if (v < 0 || v >= limit)
      Fail(file + ": element " + std::to_string(i),
           OutsideVocabulary(std::to_string(v), vocab_size));
    ids[i] = static_cast<std::int32_t>(v);
  }
  return ids;
}

JsonLinesIds ParseJsonLines(std::string_view bytes, std::int64_t vocab_size,
                            const std::string& file, const DocumentFn& on_document) {
  JsonLinesIds out;
  bool any = false;
  std::size_t start = 0;
  for (std::size_t line = 1; start < bytes.size(); ++line) {
    const std::size_t end = std::min(bytes.find('\n', start), bytes.size());
    const std::string_view text = bytes.substr(start, end - start);
    start = end + 1;
    if (text.find_first_not_of(" \t\r") == std::string_view::npos) continue;
    const std::string where = file + ": line " + std::to_string(line);
    LineValue value(vocab_size);
    if (!nlohmann::json::sax_parse(text.begin(), text.end(), &value)) Fail(where, "not valid JSON");
    const LineValue::IdList* ids = value.Ids();
    if (any && out.documents != (ids == nullptr))
      Fail(where, "mixes documents and token ids; use one form per file");
    any = true;
    out.documents = ids == nullptr;
    if (ids != nullptr) {
      if (!ids->problem.empty()) Fail(where, ids->problem);
      out.ids.insert(out.ids.end(), ids->ids.begin(), ids->ids.end());
    } else if (value.text()) {
      on_document(where, *value.text());
    } else {
      Fail(where, kExpectedLine);
    }
  }
  if (!any) Fail(file, "no lines with text or token ids");
  return out;
}

}  // namespace kvfold
