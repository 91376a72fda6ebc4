// Pipeline text: parsing, parameter access, and the --print-passes listing.
#include <algorithm>
#include <sstream>

#include "converter/passes/pass.h"
#include "formats/error.h"
#include "formats/spec_syntax.h"

namespace kvfold {
namespace {

const PassInfo* FindPass(const std::string& name) {
  for (const auto& info : PassRegistry()) {
    if (name == info.name) return &info;
  }
  return nullptr;
}

}  // namespace

void LayerPass::Run(PassContext& ctx) {
  static const LayerKvStatistics kNone;
  for (int l = 0; l < ctx.model.config.num_hidden_layers; ++l) {
    const auto i = static_cast<std::size_t>(l);
    LayerPassContext layer{ctx.model, l,
                           i < ctx.statistics.layers.size() ? ctx.statistics.layers[i] : kNone,
                           ctx.statistics.kv_heads};
    RunLayer(layer);
  }
  Finish(ctx);
}

std::string PassSpec::Text() const {
  std::map<std::string, std::string> all = defaults_used;
  for (const auto& [k, v] : params) all[k] = v;
  std::string out = name;
  if (all.empty()) return out;
  out += "<";
  bool first = true;
  for (const auto& [k, v] : all) {
    out += (first ? "" : ",") + k + "=" + v;
    first = false;
  }
  return out + ">";
}

std::vector<PassSpec> ParsePipeline(const std::string& text) {
  std::vector<PassSpec> specs;
  std::size_t i = 0;
  const std::string where = "--passes";
  while (i < text.size()) {
    std::size_t end = i;
    while (end < text.size() && text[end] != ',' && text[end] != '<') ++end;
    PassSpec spec;
    spec.name = TrimSpaces(text.substr(i, end - i));
    if (spec.name.empty()) Fail(where, "empty pass name at character " + std::to_string(i));
    const PassInfo* info = FindPass(spec.name);
    if (info == nullptr) Fail(where, "unknown pass '" + spec.name + "' (see --print-passes)");
    i = end;
    if (i < text.size() && text[i] == '<') {
      const std::size_t close = text.find('>', i);
      if (close == std::string::npos) Fail(where, "'<' after " + spec.name + " is never closed");
      for (const auto& [key, value] :
           ParseSpecParams(text.substr(i + 1, close - i - 1), where + ": " + spec.name)) {
        bool known = false;
        for (const auto& p : info->params) known |= key == p.name;
        if (!known)
          Fail(where, spec.name + ": unknown parameter '" + key + "' (see --print-passes)");
        spec.params.emplace(key, value);
      }
      i = close + 1;
    }
    specs.push_back(std::move(spec));
    if (i < text.size()) {
      if (text[i] != ',') Fail(where, "expected ',' after " + specs.back().name);
      ++i;
    }
  }
  if (specs.empty()) Fail(where, "no passes given");
  return specs;
}

std::int64_t IntParam(const PassSpec& spec, const std::string& key, std::int64_t fallback) {
  auto it = spec.params.find(key);
  if (it == spec.params.end()) {
    spec.defaults_used[key] = std::to_string(fallback);
    return fallback;
  }
  const std::optional<std::int64_t> v = ParseSpecInt(it->second);
  if (!v) Fail("--passes", spec.name + ": " + key + "=" + it->second + " is not an integer");
  return *v;
}

std::vector<std::int64_t> IntListParam(const PassSpec& spec, const std::string& key) {
  std::vector<std::int64_t> out;
  auto it = spec.params.find(key);
  if (it == spec.params.end() || it->second == "none") {
    if (it == spec.params.end()) spec.defaults_used[key] = "none";
    return out;
  }
  for (const std::string& item : SplitSpecList(it->second)) {
    const std::int64_t v = IntParam(PassSpec{spec.name, {{key, TrimSpaces(item)}}, {}}, key, 0);
    if (std::find(out.begin(), out.end(), v) != out.end()) {
      Fail("--passes",
           spec.name + ": " + key + "=" + it->second + " lists " + std::to_string(v) + " twice");
    }
    out.push_back(v);
  }
  return out;
}

void RequireUniformKvHeads(const ModelConfig& config, const std::string& pass,
                           const std::string& what) {
  if (!config.PerLayerKvHeads()) return;
  Fail("--passes",
       pass + ": " + what + " one KV-head count for every layer; this model's layers differ");
}

double DoubleParam(const PassSpec& spec, const std::string& key, double fallback) {
  auto it = spec.params.find(key);
  if (it == spec.params.end()) {
    spec.defaults_used[key] = FormatNumber(fallback);
    return fallback;
  }
  const std::optional<double> v = ParseSpecNumber(it->second);
  if (!v) Fail("--passes", spec.name + ": " + key + "=" + it->second + " is not a number");
  return *v;
}

std::string StringParam(const PassSpec& spec, const std::string& key, const std::string& fallback,
                        const std::vector<std::string>& allowed) {
  auto it = spec.params.find(key);
  const std::string v = it == spec.params.end() ? fallback : it->second;
  if (it == spec.params.end()) spec.defaults_used[key] = fallback;
  for (const auto& a : allowed) {
    if (v == a) return v;
  }
  std::string list;
  for (const auto& a : allowed) list += (list.empty() ? "" : "|") + a;
  Fail("--passes", spec.name + ": " + key + "=" + v + " is not one of " + list);
}

std::string PrintPasses() {
  std::ostringstream o;
  for (const auto& info : PassRegistry()) {
    o << info.name << "\n    " << info.summary << "\n";
    for (const auto& p : info.params) o << "    " << p.name << ": " << p.help << "\n";
  }
  return o.str();
}

}  // namespace kvfold
