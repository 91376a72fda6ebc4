#include "converter/export/gguf_inspect.h"

#include <cstdio>
#include <fstream>
#include <map>

#include "formats/error.h"
#include "formats/gguf.h"
#include "formats/mapped_file.h"
#include "formats/version.h"

namespace kvfold {
namespace {

// A count that may be one number or one per layer (llama.cpp's deci arrays).
std::vector<std::int64_t> PerLayer(const GgufMetadata& m, const std::string& key,
                                   std::int64_t layers, const std::string& path) {
  const GgufValue* v = m.Find(key);
  if (v == nullptr) return {};
  if (!v->IsArray())
    return std::vector<std::int64_t>(layers, static_cast<std::int64_t>(v->numbers.at(0)));
  if (static_cast<std::int64_t>(v->numbers.size()) != layers)
    Fail(path, key + " has " + std::to_string(v->numbers.size()) + " entries for " +
                   std::to_string(layers) + " layers");
  return std::vector<std::int64_t>(v->numbers.begin(), v->numbers.end());
}

std::int64_t Count(const GgufMetadata& m, const std::string& key) {
  const std::optional<double> v = m.Number(key);
  return v ? static_cast<std::int64_t>(*v) : 0;
}

}  // namespace

bool IsGgufFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  char magic[4] = {};
  return in.read(magic, 4) && std::string(magic, 4) == "GGUF";
}

nlohmann::ordered_json InspectGguf(const std::string& path) {
  RequireRegularFile(path);
  const MappedFile file(path);
  const GgufHeader h = ParseGgufHeader(file.bytes(), path);
  const GgufMetadata& m = h.metadata;
  const std::string arch = m.String("general.architecture").value_or("");
  if (arch.empty()) Fail(path, "has no general.architecture");
  const std::int64_t layers = Count(m, arch + ".block_count");
  if (layers <= 0 || layers > 100000) Fail(path, arch + ".block_count is missing or out of range");
  const auto heads = PerLayer(m, arch + ".attention.head_count", layers, path);
  auto kv = PerLayer(m, arch + ".attention.head_count_kv", layers, path);
  if (kv.empty()) kv = heads;
  const std::int64_t embd = Count(m, arch + ".embedding_length");
  std::int64_t key_length = Count(m, arch + ".attention.key_length");
  std::int64_t value_length = Count(m, arch + ".attention.value_length");
  if (key_length == 0 && !heads.empty() && heads[0] > 0) key_length = embd / heads[0];
  if (value_length == 0) value_length = key_length;
  std::int64_t kv_elements = 0;
  for (auto k : kv) kv_elements += k * (key_length + value_length);
  std::map<std::string, int> types;
  std::uint64_t tensor_bytes = 0;
  for (const auto& t : h.tensors) {
    const char* name = GgmlTypeName(static_cast<std::uint32_t>(t.type));
    ++types[name ? name : "?"];
    tensor_bytes += t.bytes;
  }
  nlohmann::ordered_json j = {{"kvfold_version", kVersion},
                              {"path", path},
                              {"format", "gguf"},
                              {"gguf_version", h.version},
                              {"architecture", arch},
                              {"name", m.String("general.name").value_or("")},
                              {"num_hidden_layers", layers},
                              {"hidden_size", embd},
                              {"num_attention_heads", heads},
                              {"num_key_value_heads", kv},
                              {"head_dim", key_length},
                              {"context_length", Count(m, arch + ".context_length")},
                              {"tensors", h.tensors.size()},
                              {"tensor_types", types},
                              {"tensor_bytes", tensor_bytes},
                              {"kv_cache_bytes_per_token_f16", kv_elements * 2},
                              {"kv_cache_bytes_per_token_f32", kv_elements * 4},
                              {"tokenizer", m.String("tokenizer.ggml.model").value_or("")},
                              {"tokenizer_pre", m.String("tokenizer.ggml.pre").value_or("")}};
  if (const GgufValue* tokens = m.Find("tokenizer.ggml.tokens")) j["vocab_size"] = tokens->size();
  j["made_by_kvfold"] = m.String("kvfold.version").value_or("");
  if (const auto text = m.String("kvfold.json")) {
    try {
      const nlohmann::ordered_json k = nlohmann::ordered_json::parse(*text);
      j["kvfold"] = {{"pipeline", k.value("pipeline", nlohmann::ordered_json())},
                     {"source", k.value("source", nlohmann::ordered_json())}};
    } catch (const nlohmann::json::exception&) {
      Fail(path, "its kvfold.json metadata is not JSON");
    }
  }
  return j;
}

std::string GgufSummaryText(const nlohmann::ordered_json& j) {
  auto list = [](const nlohmann::ordered_json& v) {
    bool uniform = true;
    for (const auto& x : v) uniform = uniform && x == v[0];
    return uniform && !v.empty() ? v[0].dump() + " every layer" : v.dump();
  };
  std::string out;
  char line[512];
  auto add = [&](const char* key, const std::string& value) {
    std::snprintf(line, sizeof line, "%-14s %s\n", key, Printable(value).c_str());
    out += line;
  };
  add("model", j["path"].get<std::string>() + "  (GGUF v" + j["gguf_version"].dump() + ")");
  add("architecture", j["architecture"].get<std::string>() + " (llama.cpp)");
  add("heads", list(j["num_attention_heads"]));
  add("KV heads", list(j["num_key_value_heads"]));
  add("layers", j["num_hidden_layers"].dump() + "  (hidden " + j["hidden_size"].dump() +
                    ", head dim " + j["head_dim"].dump() + ", context " +
                    j["context_length"].dump() + ")");
  add("tensors", j["tensors"].dump() + "  " + j["tensor_types"].dump() + ", " +
                     j["tensor_bytes"].dump() + " bytes");
  add("tokenizer", j["tokenizer"].get<std::string>() +
                       (j["tokenizer_pre"].get<std::string>().empty()
                            ? ""
                            : " (pre " + j["tokenizer_pre"].get<std::string>() + ")") +
                       (j.contains("vocab_size") ? ", " + j["vocab_size"].dump() + " tokens" : ""));
  add("KV cache", j["kv_cache_bytes_per_token_f16"].dump() + " bytes/token at F16 (llama.cpp's " +
                      "default), " + j["kv_cache_bytes_per_token_f32"].dump() + " at F32");
  const std::string made = j["made_by_kvfold"].get<std::string>();
  if (made.empty()) {
    add("made by", "not kvfold");
  } else if (!j.contains("kvfold")) {
    add("made by", "kvfold " + made + " (export of a checkpoint, no conversion)");
  } else {
    const auto& k = j["kvfold"];
    add("made by", "kvfold " + made);
    add("pipeline",
        k["pipeline"].is_string() ? k["pipeline"].get<std::string>() : k["pipeline"].dump());
    if (k["source"].is_object() && k["source"].contains("path"))
      add("source", k["source"]["path"].dump());
  }
  return out;
}

}  // namespace kvfold
