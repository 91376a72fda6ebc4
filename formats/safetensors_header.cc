#include "formats/safetensors_header.h"

#include <algorithm>
#include <limits>
#include <nlohmann/json.hpp>
#include <set>

#include "formats/error.h"
#include "formats/json_file.h"

namespace kvfold {
namespace {

using nlohmann::json;

std::uint64_t ReadLe64(std::string_view bytes) {
  std::uint64_t v = 0;
  for (int i = 7; i >= 0; --i) v = (v << 8) | static_cast<std::uint8_t>(bytes[i]);
  return v;
}

// Parses JSON and rejects duplicate keys in the top-level object (nlohmann would silently keep
// the last one, letting a lying header hide a tensor).
json ParseJsonRejectingDuplicates(std::string_view text, const std::string& file_name) {
  std::set<std::string> top_keys;
  std::string duplicate;
  json::parser_callback_t cb = [&](int depth, json::parse_event_t event, json& parsed) {
    if (event == json::parse_event_t::key && depth == 1) {
      const std::string& key = parsed.get_ref<const std::string&>();
      if (!top_keys.insert(key).second && duplicate.empty()) duplicate = key;
    }
    return true;
  };
  json doc;
  CheckJsonDepth(text, file_name);
  try {
    doc = json::parse(text.begin(), text.end(), cb);
  } catch (const json::exception& e) {
    Fail(file_name, std::string("header is not valid JSON (") + e.what() + ")");
  }
  if (!duplicate.empty()) Fail(file_name, "header names tensor '" + duplicate + "' twice");
  return doc;
}

std::uint64_t ReadOffset(const json& v, const std::string& where) {
  if (!v.is_number_unsigned()) Fail(where, "data_offsets must be non-negative integers");
  return v.get<std::uint64_t>();
}

TensorEntry ParseTensorEntry(const std::string& name, const json& info,
                             const std::string& file_name) {
  const std::string where = file_name + ": tensor '" + name + "'";
  if (!info.is_object()) Fail(where, "entry is not a JSON object");
  TensorEntry t;
  t.name = name;

  auto dtype_it = info.find("dtype");
  if (dtype_it == info.end() || !dtype_it->is_string()) Fail(where, "missing string 'dtype'");
  auto dtype = ParseDType(dtype_it->get_ref<const std::string&>());
  if (!dtype) Fail(where, "unknown dtype '" + dtype_it->get<std::string>() + "'");
  t.dtype = *dtype;

  auto shape_it = info.find("shape");
  if (shape_it == info.end() || !shape_it->is_array()) Fail(where, "missing array 'shape'");
  std::uint64_t elements = 1;
  bool overflow = false;
  for (const auto& dim : *shape_it) {
    if (!dim.is_number_unsigned()) Fail(where, "shape entries must be non-negative integers");
    std::uint64_t d = dim.get<std::uint64_t>();
    if (d > static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max())) overflow = true;
    if (d != 0 && elements > std::numeric_limits<std::uint64_t>::max() / d) overflow = true;
    if (!overflow) elements *= d;
    t.shape.push_back(static_cast<std::int64_t>(d));
  }
  std::uint64_t elem_size = DTypeSize(t.dtype);
  if (overflow || elements > std::numeric_limits<std::uint64_t>::max() / elem_size) {
    Fail(where, "shape is too large");
  }

  auto off_it = info.find("data_offsets");
  if (off_it == info.end() || !off_it->is_array() || off_it->size() != 2) {
    Fail(where, "missing 'data_offsets' [begin, end]");
  }
  t.begin = ReadOffset((*off_it)[0], where);
  t.end = ReadOffset((*off_it)[1], where);
  if (t.end < t.begin) Fail(where, "data_offsets end before they begin");
  std::uint64_t bytes = elements * elem_size;
  if (t.end - t.begin != bytes) {
    Fail(where, "shape needs " + std::to_string(bytes) + " bytes of " + DTypeName(t.dtype) +
                    " but data_offsets span " + std::to_string(t.end - t.begin));
  }
  return t;
}

}  // namespace

std::int64_t TensorEntry::NumElements() const {
  std::int64_t n = 1;
  for (auto d : shape) n *= d;
  return n;
}

SafetensorsHeader ParseSafetensorsHeader(std::string_view prefix, std::uint64_t file_size,
                                         const std::string& file_name) {
  if (file_size < 8 || prefix.size() < 8) {
    Fail(file_name, "file is " + std::to_string(file_size) +
                        " bytes, too short for a safetensors header (truncated?)");
  }
  SafetensorsHeader header;
  header.header_bytes = ReadLe64(prefix);
  if (header.header_bytes > file_size - 8) {
    Fail(file_name, "header length " + std::to_string(header.header_bytes) +
                        " exceeds the file size " + std::to_string(file_size) + " (truncated?)");
  }
  if (header.header_bytes > kMaxSafetensorsHeaderBytes) {
    Fail(file_name, "header length " + std::to_string(header.header_bytes) +
                        " is larger than the 100 MiB limit");
  }
  if (prefix.size() < 8 + header.header_bytes) {
    Fail(file_name, "internal: header prefix shorter than the header");
  }
  header.data_offset = 8 + header.header_bytes;
  const std::uint64_t data_size = file_size - header.data_offset;

  json doc = ParseJsonRejectingDuplicates(prefix.substr(8, header.header_bytes), file_name);
  if (!doc.is_object()) Fail(file_name, "header is not a JSON object");

  for (auto it = doc.begin(); it != doc.end(); ++it) {
    if (it.key() == "__metadata__") {
      if (!it->is_object()) Fail(file_name, "__metadata__ is not an object");
      for (auto m = it->begin(); m != it->end(); ++m) {
        if (!m->is_string())
          Fail(file_name, "__metadata__ value '" + m.key() + "' is not a string");
        header.metadata[m.key()] = m->get<std::string>();
      }
      continue;
    }
    header.tensors.push_back(ParseTensorEntry(it.key(), *it, file_name));
  }

  // Offsets: inside the data area, no overlaps, no holes (the format forbids unindexed bytes).
  std::vector<const TensorEntry*> by_offset;
  for (const auto& t : header.tensors) by_offset.push_back(&t);
  std::sort(by_offset.begin(), by_offset.end(), [](const TensorEntry* a, const TensorEntry* b) {
    return a->begin != b->begin ? a->begin < b->begin : a->end < b->end;
  });
  std::uint64_t cursor = 0;
  const TensorEntry* previous = nullptr;
  for (const TensorEntry* t : by_offset) {
    if (t->end > data_size) {
      Fail(file_name, "tensor '" + t->name + "' ends at byte " + std::to_string(t->end) + " of a " +
                          std::to_string(data_size) +
                          "-byte data area (offsets point past the end of the file)");
    }
    if (t->begin < cursor) {
      Fail(file_name, "tensors '" + previous->name + "' and '" + t->name + "' overlap");
    }
    if (t->begin > cursor) {
      Fail(file_name, "bytes " + std::to_string(cursor) + ".." + std::to_string(t->begin) +
                          " of the data area belong to no tensor");
    }
    cursor = t->end;
    if (t->end > t->begin || previous == nullptr) previous = t;
  }
  if (cursor != data_size) {
    Fail(file_name, "the data area has " + std::to_string(data_size - cursor) +
                        " trailing bytes that belong to no tensor");
  }
  return header;
}

}  // namespace kvfold
