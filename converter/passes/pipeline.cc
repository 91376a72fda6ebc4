// Pipeline text and pass specs: the registry's parameter schemas drive parsing, checking,
// defaults, the canonical text and the --print-passes listing.
#include <algorithm>
#include <sstream>

#include "converter/passes/pass.h"
#include "formats/error.h"
#include "formats/spec_syntax.h"

namespace kvfold {
namespace {

// The registered pass `name`; Error("--passes: unknown pass ...") when there is none.
const PassInfo& FindPass(const std::string& name) {
  for (const auto& info : PassRegistry()) {
    if (name == info.name) return info;
  }
  Fail("--passes", "unknown pass '" + name + "' (see --print-passes)");
}

[[noreturn]] void FailParam(const std::string& pass, const std::string& what) {
  Fail("--passes", pass + ": " + what);
}

bool IsWord(const PassParam& p, const std::string& v) {
  return std::find(p.words.begin(), p.words.end(), v) != p.words.end();
}

std::string Joined(const std::vector<std::string>& words, const char* sep) {
  std::string out;
  for (const auto& w : words) out += (out.empty() ? "" : sep) + w;
  return out;
}

// Integers separated by commas, canonical ("4,8"); `distinct` refuses repeats, and then "none"
// is the empty list.
std::string CanonicalIntList(const std::string& pass, const PassParam& p, const std::string& v,
                             bool distinct) {
  if (distinct && v == "none") return v;
  std::vector<std::int64_t> seen;
  std::string out;
  for (const std::string& raw : SplitSpecList(v)) {
    const std::string item = TrimSpaces(raw);
    const std::optional<std::int64_t> n = ParseSpecInt(item);
    if (!n) FailParam(pass, std::string(p.name) + "=" + item + " is not an integer");
    if (distinct && std::find(seen.begin(), seen.end(), *n) != seen.end())
      FailParam(pass, std::string(p.name) + "=" + v + " lists " + std::to_string(*n) + " twice");
    seen.push_back(*n);
    out += (out.empty() ? "" : ",") + std::to_string(*n);
  }
  return out;
}

// `v` checked against `p`'s type, in canonical form.
std::string Canonical(const std::string& pass, const PassParam& p, const std::string& written) {
  const std::string v = TrimSpaces(written);
  if (p.type != ParamType::kChoice && IsWord(p, v)) return v;
  const std::string what = std::string(p.name) + "=" + v;
  switch (p.type) {
    case ParamType::kInt: {
      const std::optional<std::int64_t> n = ParseSpecInt(v);
      if (!n) FailParam(pass, what + " is not an integer");
      return std::to_string(*n);
    }
    case ParamType::kNumber:
      if (!ParseSpecNumber(v)) FailParam(pass, what + " is not a number");
      return v;
    case ParamType::kChoice:
      if (!IsWord(p, v)) FailParam(pass, what + " is not one of " + Joined(p.words, "|"));
      return v;
    case ParamType::kIntList:
      return CanonicalIntList(pass, p, v, false);
    case ParamType::kIntSet:
      return CanonicalIntList(pass, p, v, true);
  }
  return v;
}

// Whether `p` applies given the values already in force (its `when` condition).
bool Applies(const PassParam& p, const std::map<std::string, std::string>& values) {
  if (p.when == nullptr) return true;
  const std::string cond = p.when;
  const std::size_t eq = cond.find('=');
  const auto it = values.find(cond.substr(0, eq));
  return it != values.end() && it->second == cond.substr(eq + 1);
}

const char* TypeName(const PassParam& p) {
  switch (p.type) {
    case ParamType::kInt:
      return "integer";
    case ParamType::kNumber:
      return "number";
    case ParamType::kChoice:
      return "";
    case ParamType::kIntList:
      return "integers, comma-separated";
    case ParamType::kIntSet:
      return "distinct integers, comma-separated, or none";
  }
  return "";
}

// "kv-heads (integers, comma-separated | auto; required)".
std::string Signature(const PassParam& p) {
  std::string type = p.type == ParamType::kChoice ? Joined(p.words, " | ") : TypeName(p);
  if (p.type != ParamType::kChoice && !p.words.empty()) type += " | " + Joined(p.words, " | ");
  std::string in_force;
  if (p.default_value != nullptr) {
    in_force = std::string("default ") + p.default_value;
  } else if (p.default_from != nullptr) {
    in_force = std::string("default: as ") + p.default_from;
  } else {
    in_force = "required";
  }
  if (p.when != nullptr) in_force += std::string(", only with ") + p.when;
  return std::string(p.name) + " (" + type + "; " + in_force + ")";
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
  std::string out = name;
  if (values.empty()) return out;
  out += "<";
  bool first = true;
  for (const auto& [k, v] : values) {
    out += (first ? "" : ",") + k + "=" + v;
    first = false;
  }
  return out + ">";
}

const std::string& PassSpec::Get(const std::string& key) const {
  const auto it = values.find(key);
  if (it == values.end()) FailParam(name, key + " is not in force here");
  return it->second;
}

std::int64_t PassSpec::Int(const std::string& key) const {
  const std::optional<std::int64_t> n = ParseSpecInt(Get(key));
  if (!n) FailParam(name, key + "=" + Get(key) + " is not an integer");
  return *n;
}

double PassSpec::Number(const std::string& key) const {
  const std::optional<double> x = ParseSpecNumber(Get(key));
  if (!x) FailParam(name, key + "=" + Get(key) + " is not a number");
  return *x;
}

std::vector<std::int64_t> PassSpec::IntList(const std::string& key) const {
  std::vector<std::int64_t> out;
  if (Get(key) == "none") return out;
  for (const std::string& item : SplitSpecList(Get(key))) {
    const std::optional<std::int64_t> n = ParseSpecInt(item);
    if (!n) FailParam(name, key + "=" + Get(key) + " is not a list of integers");
    out.push_back(*n);
  }
  return out;
}

std::unique_ptr<Pass> CreatePass(const PassSpec& spec, const ModelConfig& config) {
  return FindPass(spec.name).create(spec, config);
}

PassSpec MakePassSpec(const std::string& name, const std::map<std::string, std::string>& written) {
  const PassInfo& info = FindPass(name);
  PassSpec spec{name, {}, {}};
  for (const auto& [key, value] : written) {
    const auto p = std::find_if(info.params.begin(), info.params.end(),
                                [&](const PassParam& q) { return key == q.name; });
    if (p == info.params.end())
      FailParam(name, "unknown parameter '" + key + "' (see --print-passes)");
    spec.values[key] = Canonical(name, *p, value);
    spec.written.insert(key);
  }
  // Unconditional parameters first: the conditions of the others read them.
  for (const bool conditional : {false, true}) {
    for (const PassParam& p : info.params) {
      if ((p.when != nullptr) != conditional) continue;
      if (!Applies(p, spec.values)) {
        if (spec.written.count(p.name))
          FailParam(name, std::string(p.name) + " applies only with " + p.when);
        continue;
      }
      if (spec.values.count(p.name)) continue;
      if (p.default_value != nullptr) {
        spec.values[p.name] = p.default_value;
      } else if (p.default_from != nullptr) {
        spec.values[p.name] = spec.values.at(p.default_from);
      } else {
        FailParam(name, std::string(p.name) + " is required (" + p.help + ")");
      }
    }
  }
  return spec;
}

PipelineSpec ParsePipeline(const std::string& text) {
  PipelineSpec specs;
  std::size_t i = 0;
  const std::string where = "--passes";
  while (i < text.size()) {
    std::size_t end = i;
    while (end < text.size() && text[end] != ',' && text[end] != '<') ++end;
    const std::string name = TrimSpaces(text.substr(i, end - i));
    if (name.empty()) Fail(where, "empty pass name at character " + std::to_string(i));
    FindPass(name);  // an unknown name fails here, before its parameters are read
    i = end;
    std::map<std::string, std::string> written;
    if (i < text.size() && text[i] == '<') {
      const std::size_t close = text.find('>', i);
      if (close == std::string::npos) Fail(where, "'<' after " + name + " is never closed");
      for (const auto& [key, value] :
           ParseSpecParams(text.substr(i + 1, close - i - 1), where + ": " + name))
        written.emplace(key, value);
      i = close + 1;
    }
    specs.push_back(MakePassSpec(name, written));
    if (i < text.size()) {
      if (text[i] != ',') Fail(where, "expected ',' after " + name);
      ++i;
    }
  }
  if (specs.empty()) Fail(where, "no passes given");
  return specs;
}

std::string PipelineText(const PipelineSpec& pipeline) {
  std::string text;
  for (const auto& spec : pipeline) text += (text.empty() ? "" : ",") + spec.Text();
  return text;
}

PipelineSpec Then(PipelineSpec pipeline, PassSpec pass) {
  pipeline.push_back(std::move(pass));
  return pipeline;
}

std::string NonUniformKvHeads(const ModelConfig& config, const std::string& what) {
  if (!config.PerLayerKvHeads()) return "";
  return what + " one KV-head count for every layer; this model's layers differ";
}

void RequireSupported(const Pass& pass, const std::string& name, const ModelConfig& config) {
  const std::string why = pass.Unsupported(config);
  if (!why.empty()) Fail("--passes", name + ": " + why);
}

std::string PrintPasses() {
  std::ostringstream o;
  for (const auto& info : PassRegistry()) {
    o << info.name << "\n    " << info.summary << "\n";
    for (const auto& p : info.params) o << "    " << Signature(p) << ": " << p.help << "\n";
  }
  return o.str();
}

}  // namespace kvfold
