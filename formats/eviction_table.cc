#include "formats/eviction_table.h"

#include <cmath>
#include <nlohmann/json.hpp>
#include <string_view>

#include "formats/error.h"
#include "formats/safetensors_writer.h"
#include "formats/versioned_json.h"

namespace kvfold {
namespace {

constexpr const char* kSchema = "kvfold-eviction-policy";
constexpr int kFormatVersion = 1;

// Rounded for the JSON, so the file stays readable; the safetensors file has the float32 values.
double Round6(double x) { return std::round(x * 1e6) / 1e6; }

std::vector<float> ToF32(const std::vector<double>& v) {
  return std::vector<float>(v.begin(), v.end());
}

template <typename Fn>
std::vector<float> PerHead(const EvictionTable& t, Fn fn) {
  std::vector<float> out;
  out.reserve(t.heads.size());
  for (const auto& h : t.heads) out.push_back(static_cast<float>(fn(h)));
  return out;
}

}  // namespace

std::string EvictionTableJson(const EvictionTable& t) {
  nlohmann::ordered_json heads = nlohmann::ordered_json::array();
  for (std::int64_t l = 0; l < t.layers; ++l) {
    for (std::int64_t g = 0; g < t.kv_heads; ++g) {
      const EvictionTableHead& h = t.at(l, g);
      heads.push_back({{"layer", l},
                       {"kv_head", g},
                       {"spearman", Round6(h.spearman)},
                       {"alr", Round6(h.alr)},
                       {"alr_random", Round6(h.alr_random)},
                       {"sink_share", Round6(h.sink_share)},
                       {"keep", h.keep},
                       {"skip", h.skip}});
    }
  }
  nlohmann::ordered_json j = {
      {"schema", kSchema},
      {"format_version", kFormatVersion},
      {"layers", t.layers},
      {"kv_heads", t.kv_heads},
      {"calibration", {{"windows", t.windows}, {"window", t.window}}},
      {"rule", t.rule},
      {"budget", t.budget},
      {"keep_grid", t.keep_grid},
      {"tensors", kEvictionTableSafetensors},
      {"heads", heads},
  };
  return j.dump(2) + "\n";
}

void WriteEvictionTableSafetensors(const std::string& path, const EvictionTable& t) {
  const std::int64_t L = t.layers, KV = t.kv_heads,
                     R = static_cast<std::int64_t>(t.keep_grid.size());
  const std::vector<float> spearman = PerHead(t, [](const auto& h) { return h.spearman; });
  const std::vector<float> alr = PerHead(t, [](const auto& h) { return h.alr; });
  const std::vector<float> alr_random = PerHead(t, [](const auto& h) { return h.alr_random; });
  const std::vector<float> sink = PerHead(t, [](const auto& h) { return h.sink_share; });
  const std::vector<float> keep = PerHead(t, [](const auto& h) { return h.keep; });
  const std::vector<float> skip = PerHead(t, [](const auto& h) { return h.skip ? 1.0 : 0.0; });
  const std::vector<float> grid = ToF32(t.keep_grid), loss_l2 = ToF32(t.loss_l2),
                           loss_ideal = ToF32(t.loss_ideal);
  auto bytes = [](const std::vector<float>& v) {
    return std::string_view(reinterpret_cast<const char*>(v.data()), v.size() * sizeof(float));
  };
  WriteSafetensors(path,
                   {{"spearman", DType::kF32, {L, KV}, bytes(spearman)},
                    {"alr", DType::kF32, {L, KV}, bytes(alr)},
                    {"alr_random", DType::kF32, {L, KV}, bytes(alr_random)},
                    {"sink_share", DType::kF32, {L, KV}, bytes(sink)},
                    {"keep", DType::kF32, {L, KV}, bytes(keep)},
                    {"skip", DType::kF32, {L, KV}, bytes(skip)},
                    {"keep_grid", DType::kF32, {R}, bytes(grid)},
                    {"attention_loss_l2", DType::kF32, {L, KV, R}, bytes(loss_l2)},
                    {"attention_loss_ideal", DType::kF32, {L, KV, R}, bytes(loss_ideal)}},
                   {{"schema", kSchema}, {"format_version", std::to_string(kFormatVersion)}});
}

EvictionTable ReadEvictionTable(const std::string& path) {
  const nlohmann::json j =
      ReadVersionedJson(path, kSchema, kFormatVersion, "eviction policy table");
  EvictionTable t;
  try {
    t.layers = j.at("layers").get<std::int64_t>();
    t.kv_heads = j.at("kv_heads").get<std::int64_t>();
    t.rule = j.at("rule").get<std::string>();
    t.budget = j.at("budget").get<double>();
    t.windows = j.at("calibration").at("windows").get<std::int64_t>();
    t.window = j.at("calibration").at("window").get<std::int64_t>();
    t.keep_grid = j.at("keep_grid").get<std::vector<double>>();
    if (t.layers <= 0 || t.kv_heads <= 0 || t.layers * t.kv_heads > (1 << 20))
      Fail(path, "implausible layers/kv_heads");
    t.heads.resize(static_cast<std::size_t>(t.layers * t.kv_heads));
    std::vector<bool> seen(t.heads.size(), false);
    for (const auto& h : j.at("heads")) {
      const auto l = h.at("layer").get<std::int64_t>(), g = h.at("kv_head").get<std::int64_t>();
      if (l < 0 || l >= t.layers || g < 0 || g >= t.kv_heads)
        Fail(path, "head entry outside the table's layers/kv_heads");
      const auto index = static_cast<std::size_t>(l * t.kv_heads + g);
      if (seen[index])
        Fail(path, "layer " + std::to_string(l) + " head " + std::to_string(g) + " listed twice");
      seen[index] = true;
      EvictionTableHead& e = t.heads[index];
      e.spearman = h.at("spearman").get<double>();
      e.alr = h.at("alr").get<double>();
      e.alr_random = h.at("alr_random").get<double>();
      e.sink_share = h.at("sink_share").get<double>();
      e.keep = h.at("keep").get<double>();
      e.skip = h.at("skip").get<bool>();
      if (!(e.keep > 0 && e.keep <= 1))
        Fail(path, "keep of layer " + std::to_string(l) + " head " + std::to_string(g) +
                       " is not in (0, 1]");
    }
    for (bool s : seen) {
      if (!s) Fail(path, "not every (layer, kv_head) has an entry");
    }
  } catch (const nlohmann::json::exception& e) {
    Fail(path, std::string("malformed eviction policy table (") + e.what() + ")");
  }
  return t;
}

}  // namespace kvfold
