#include "formats/kv_mixed_table.h"

#include <algorithm>
#include <nlohmann/json.hpp>
#include <string_view>

#include "formats/error.h"
#include "formats/safetensors_writer.h"
#include "formats/tensor_store.h"
#include "formats/versioned_json.h"

namespace kvfold {
namespace {

constexpr const char* kSchema = "kvfold-kv-mixed";
constexpr int kFormatVersion = 1;

std::string_view Bytes(const std::vector<float>& v) {
  return {reinterpret_cast<const char*>(v.data()), v.size() * sizeof(float)};
}

}  // namespace

std::string KvMixedTableJson(const KvMixedTable& t) {
  nlohmann::ordered_json layers = nlohmann::ordered_json::array();
  for (std::int64_t l = 0; l < t.layers; ++l) {
    const bool protect = std::find(t.protect.begin(), t.protect.end(), l) != t.protect.end();
    layers.push_back({{"layer", l},
                      {"quantized", !protect},
                      {"key_bits", protect ? t.hi_bits : t.key_bits},
                      {"value_bits", protect ? t.hi_bits : t.value_bits}});
  }
  nlohmann::ordered_json j = {
      {"schema", kSchema},
      {"format_version", kFormatVersion},
      {"layers", t.layers},
      {"kv_heads", t.kv_heads},
      {"head_dim", t.head_dim},
      {"calibration", {{"tokens", t.calibration_tokens}}},
      {"importance",
       {{"policy", "h2o-accumulated-attention"}, {"keep", t.keep}, {"recent", t.recent}}},
      {"high", {{"bits", t.hi_bits}}},
      {"low",
       {{"key_bits", t.key_bits},
        {"value_bits", t.value_bits},
        {"key_axis", t.key_axis},
        {"value_axis", t.value_axis},
        {"group", t.group == 0 ? t.head_dim : t.group}}},
      {"protect", t.protect},
      {"tensors", kKvMixedSafetensors},
      {"per_layer", layers},
  };
  return j.dump(2) + "\n";
}

void WriteKvMixedSafetensors(const std::string& path, const KvMixedTable& t) {
  const std::vector<std::int64_t> shape = {t.layers, t.kv_heads, t.head_dim};
  WriteSafetensors(path,
                   {{"key_channel_min", DType::kF32, shape, Bytes(t.key_min)},
                    {"key_channel_max", DType::kF32, shape, Bytes(t.key_max)}},
                   {{"schema", kSchema}, {"format_version", std::to_string(kFormatVersion)}});
}

KvMixedTable ReadKvMixedTable(const std::string& path) {
  const nlohmann::json j = ReadVersionedJson(path, kSchema, kFormatVersion, "kv-mixed table");
  KvMixedTable t;
  try {
    t.layers = j.at("layers").get<std::int64_t>();
    t.kv_heads = j.at("kv_heads").get<std::int64_t>();
    t.head_dim = j.at("head_dim").get<std::int64_t>();
    t.calibration_tokens = j.at("calibration").at("tokens").get<std::int64_t>();
    t.keep = j.at("importance").at("keep").get<double>();
    t.recent = j.at("importance").at("recent").get<double>();
    t.hi_bits = j.at("high").at("bits").get<int>();
    const auto& low = j.at("low");
    t.key_bits = low.at("key_bits").get<int>();
    t.value_bits = low.at("value_bits").get<int>();
    t.key_axis = low.at("key_axis").get<std::string>();
    t.value_axis = low.at("value_axis").get<std::string>();
    t.group = low.at("group").get<std::int64_t>();
    t.protect = j.at("protect").get<std::vector<int>>();
  } catch (const nlohmann::json::exception& e) {
    Fail(path, std::string("malformed kv-mixed table (") + e.what() + ")");
  }
  if (t.layers <= 0 || t.kv_heads <= 0 || t.head_dim <= 0 ||
      t.layers * t.kv_heads * t.head_dim > (1 << 26)) {
    Fail(path, "implausible layers/kv_heads/head_dim");
  }
  const std::size_t slash = path.find_last_of('/');
  const std::string tensors =
      (slash == std::string::npos ? std::string() : path.substr(0, slash + 1)) +
      kKvMixedSafetensors;
  const TensorStore store = TensorStore::OpenFile(tensors);
  t.key_min = store.ReadF32("key_channel_min");
  t.key_max = store.ReadF32("key_channel_max");
  const auto n = static_cast<std::size_t>(t.layers * t.kv_heads * t.head_dim);
  if (t.key_min.size() != n || t.key_max.size() != n)
    Fail(tensors, "key ranges do not match the table's layers x kv_heads x head_dim");
  return t;
}

}  // namespace kvfold
