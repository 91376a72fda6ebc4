#include "converter/plan/plan_candidates.h"

#include <algorithm>
#include <map>

#include "calib/ggml_cache_types.h"
#include "formats/error.h"

namespace kvfold {

PlanRuntime ParsePlanRuntime(const std::string& text, const std::string& where) {
  if (text == "kvfold") return PlanRuntime::kKvfold;
  if (text == "llama.cpp") return PlanRuntime::kLlamaCpp;
  if (text == "vllm") return PlanRuntime::kVllm;
  Fail(where, "'" + text + "' is not kvfold, llama.cpp or vllm");
}

const char* PlanRuntimeName(PlanRuntime runtime) {
  switch (runtime) {
    case PlanRuntime::kLlamaCpp:
      return "llama.cpp";
    case PlanRuntime::kVllm:
      return "vllm";
    default:
      return "kvfold";
  }
}

namespace {

// gqa-svd with `params`; on a model with per-head q/k norms (Qwen3, Gemma 3) its approximate
// fold, the only one there (docs/gqa.md): the plan measures whether it is worth its bytes.
PassSpec Fold(std::map<std::string, std::string> params, const ModelConfig& c) {
  if (c.qk_norm) params["qk-norm"] = "approximate";
  return MakePassSpec("gqa-svd", params);
}

// The family of a KV-head conversion: approximate on models with q/k norms.
std::string HeadsFamily(const ModelConfig& c, const std::string& family = "heads") {
  return c.qk_norm ? "approximate " + family : family;
}

// gqa-svd to `kv` KV heads on every layer (refit=none: before cross-layer sharing).
PassSpec HeadsTo(std::int64_t kv, const ModelConfig& c, bool refit = true) {
  std::map<std::string, std::string> params = {{"kv-heads", std::to_string(kv)}};
  if (!refit) params["refit"] = "none";
  return Fold(params, c);
}

// mlkv to `layers` layers that keep K/V.
PassSpec ShareTo(std::int64_t layers) {
  return MakePassSpec("mlkv", {{"kv-layers", std::to_string(layers)}});
}

// What llama.cpp and vLLM serve: KV heads on every layer, or the same totals per layer.
std::vector<PlanStructure> ServedStructures(const ModelConfig& c) {
  std::vector<PlanStructure> out = {{{}, "none", true}};
  const std::int64_t layers = c.num_hidden_layers, total = c.TotalKvHeads();
  for (std::int64_t divisor : {2, 4, 8}) {
    if (!c.PerLayerKvHeads() && c.num_key_value_heads % divisor == 0) {
      const std::int64_t kv = c.num_key_value_heads / divisor;
      out.push_back({{HeadsTo(kv, c)}, HeadsFamily(c), true});
    }
  }
  // Per layer, in eighths of the heads: a total between two uniform counts trims a cache type
  // to a budget (at one head a layer there is nothing to allocate).
  std::int64_t last = total;
  for (std::int64_t eighths = 7; eighths >= 1; --eighths) {
    const std::int64_t t = total * eighths / 8;
    if (t <= layers || t == last) continue;
    out.push_back({{Fold({{"kv-heads", "auto"}, {"kv-head-total", std::to_string(t)}}, c)},
                   HeadsFamily(c, "heads per layer"),
                   true});
    last = t;
  }
  return out;
}

// Why `s` cannot run on a model `c` describes ("<pass>: <reason>"), or "": each pass says
// (Pass::Unsupported); the planner copies none of their rules.
std::string Refusal(const PlanStructure& s, const ModelConfig& c) {
  for (const PassSpec& spec : s.passes) {
    const std::string why = CreatePass(spec, c)->Unsupported(c);
    if (!why.empty()) return spec.name + ": " + why;
  }
  return "";
}

// The structures that run on `c`; the others, with why, to `refused` when given.
std::vector<PlanStructure> Runnable(const std::vector<PlanStructure>& structures,
                                    const ModelConfig& c, std::vector<RefusedStructure>* refused) {
  std::vector<PlanStructure> out;
  for (const PlanStructure& s : structures) {
    std::string why = Refusal(s, c);
    if (why.empty()) {
      out.push_back(s);
    } else if (refused != nullptr) {
      refused->push_back({PipelineText(s.passes), std::move(why)});
    }
  }
  return out;
}

}  // namespace

std::vector<PlanStructure> PlanStructures(const ModelConfig& c, PlanRuntime runtime,
                                          std::vector<RefusedStructure>* refused) {
  if (runtime != PlanRuntime::kKvfold) return Runnable(ServedStructures(c), c, refused);
  std::vector<PlanStructure> out = {{{}, "none", true}};
  if (c.PerLayerKvHeads()) return out;  // the counts tried here are uniform
  const std::int64_t kv = c.num_key_value_heads, layers = c.num_hidden_layers;
  for (std::int64_t divisor : {2, 4, 8}) {
    if (kv % divisor == 0) out.push_back({{HeadsTo(kv / divisor, c)}, HeadsFamily(c), true});
  }
  // mlkv runs in the whole-model sweep: kv-scales cannot follow it there, and gqa-svd's refit
  // cannot run before it (refit=none says so in the text that is recorded). The runtime has no
  // cache policies for layers that share K/V, so these take the full cache only.
  for (std::int64_t divisor : {2, 4}) {
    if (layers / divisor >= 1 && layers / divisor < layers) {
      out.push_back({{ShareTo(layers / divisor)}, "cross-layer", false, false});
    }
  }
  if (kv % 2 == 0 && layers >= 2) {
    out.push_back(
        {{HeadsTo(kv / 2, c, false), ShareTo(layers / 2)}, "heads+cross-layer", false, false});
  }
  return Runnable(out, c, refused);
}

std::vector<PlanStructure> WithHealedStructures(std::vector<PlanStructure> structures,
                                                const ModelConfig& c,
                                                std::vector<RefusedStructure>* refused) {
  std::vector<PlanStructure> healed;
  for (const PlanStructure& s : structures) {
    if (s.passes.empty()) continue;  // the model itself: nothing to heal
    healed.push_back(s);
    healed.back().passes = Then(s.passes, MakePassSpec("heal"));
    healed.back().family = "healed " + s.family;
  }
  // `structures` were asked already (PlanStructures); only heal is new.
  for (PlanStructure& s : Runnable(healed, c, refused)) structures.push_back(std::move(s));
  return structures;
}

namespace {

// llama.cpp's -ctk/-ctv pairs, keys at least as precise as values (bf16 stores as many bytes as
// f16, llama.cpp's default, and is left out).
std::vector<PlanCache> LlamaCppCaches(std::int64_t head_dim) {
  const GgmlCacheType types[] = {GgmlCacheType::kF16,   GgmlCacheType::kQ8_0, GgmlCacheType::kQ5_1,
                                 GgmlCacheType::kQ5_0,  GgmlCacheType::kQ4_1, GgmlCacheType::kQ4_0,
                                 GgmlCacheType::kIQ4_NL};
  std::vector<PlanCache> out;
  for (GgmlCacheType k : types) {
    for (GgmlCacheType v : types) {
      if (GgmlBitsPerElement(v) > GgmlBitsPerElement(k)) continue;
      if (head_dim % static_cast<std::int64_t>(GgmlBlockSize(k)) != 0 ||
          head_dim % static_cast<std::int64_t>(GgmlBlockSize(v)) != 0)
        continue;
      const std::string kn = GgmlCacheTypeName(k), vn = GgmlCacheTypeName(v);
      PlanCache c{"ggml<k=" + kn + ",v=" + vn + ">", kn == "f16" && vn == "f16" ? "none" : "quant"};
      c.cache_k = kn;
      c.cache_v = vn;
      out.push_back(c);
    }
  }
  return out;
}

std::vector<PlanCache> VllmCaches() {
  PlanCache full{"", "none"};
  full.cache_k = full.cache_v = "auto";  // vLLM's --kv-cache-dtype auto: the model's dtype
  PlanCache fp8{"quant<scheme=fp8>", "quant", true};
  fp8.cache_k = fp8.cache_v = "fp8";
  return {full, fp8};
}

}  // namespace

std::vector<PlanCache> PlanCaches(PlanRuntime runtime, std::int64_t head_dim) {
  if (runtime == PlanRuntime::kLlamaCpp) return LlamaCppCaches(head_dim);
  if (runtime == PlanRuntime::kVllm) return VllmCaches();
  std::vector<PlanCache> out = {{"", "none", false}, {"quant<scheme=fp8>", "quant", true}};
  for (const char* scheme : {"rtn", "kivi"}) {
    const std::vector<int> bits =
        std::string(scheme) == "rtn" ? std::vector<int>{8, 4, 3, 2} : std::vector<int>{4, 2};
    for (int key : bits) {
      for (int value : bits) {
        out.push_back({std::string("quant<scheme=") + scheme + ",key-bits=" + std::to_string(key) +
                           ",value-bits=" + std::to_string(value) + ">",
                       "quant", false, std::min(key, value) <= 3});
      }
    }
  }
  out.push_back({"quant<scheme=mikv,bits=4,keep=0.2>", "quant", false});
  out.push_back({"quant<scheme=mikv,bits=2,keep=0.2>", "quant", false});
  for (const char* keep : {"0.5", "0.25"})
    out.push_back({std::string("evict<policy=l2-low,keep=") + keep + ">", "evict", false});
  return out;
}

namespace {

// "0,3,5": a protect list in ascending order (the canonical form).
std::string LayerList(std::vector<std::int64_t> layers) {
  std::sort(layers.begin(), layers.end());
  std::string out;
  for (std::int64_t l : layers) out += (out.empty() ? "" : ",") + std::to_string(l);
  return out;
}

}  // namespace

std::string LayerProbeCache(std::int64_t layers, std::int64_t layer) {
  std::vector<std::int64_t> others;
  for (std::int64_t l = 0; l < layers; ++l) {
    if (l != layer) others.push_back(l);
  }
  return "quant<scheme=rtn,key-bits=2,value-bits=2" +
         (others.empty() ? "" : ",protect=" + LayerList(others)) + ">";
}

std::vector<PlanCache> ProtectedCaches(const std::vector<PlanCache>& caches,
                                       const std::vector<std::int64_t>& by_sensitivity) {
  std::vector<PlanCache> out;
  for (std::size_t count = 1; count <= 2 && count < by_sensitivity.size(); ++count) {
    const std::vector<std::int64_t> top(
        by_sensitivity.begin(), by_sensitivity.begin() + static_cast<std::ptrdiff_t>(count));
    for (const PlanCache& c : caches) {
      if (!c.low_bits) continue;
      PlanCache p = c;
      p.spec.insert(p.spec.size() - 1, ",protect=" + LayerList(top));
      p.low_bits = false;
      out.push_back(p);
    }
  }
  return out;
}

PipelineSpec WithKvScales(const PipelineSpec& passes) {
  return Then(passes, MakePassSpec("kv-scales"));
}

PlanCandidate Combine(const std::vector<PlanStructure>& structures, std::size_t s,
                      const std::vector<PlanCache>& caches, std::size_t c) {
  const PlanStructure& st = structures[s];
  const PlanCache& ca = caches[c];
  PlanCandidate k;
  k.structure = s;
  k.cache = c;
  k.passes = ca.needs_fp8_scales ? WithKvScales(st.passes) : st.passes;
  k.kv_cache = ca.spec;
  k.cache_k = ca.cache_k;
  k.cache_v = ca.cache_v;
  if (st.family == "none") {
    k.family = ca.family;
  } else {
    k.family = ca.family == "none" ? st.family : st.family + "+" + ca.family;
  }
  return k;
}

PlanServing ServingOf(PlanRuntime runtime, const PlanCandidate& k, const std::string& output) {
  const bool per_layer =
      !k.kv_heads.empty() && std::any_of(k.kv_heads.begin(), k.kv_heads.end(),
                                         [&](std::int64_t n) { return n != k.kv_heads.front(); });
  PlanServing s;
  switch (runtime) {
    case PlanRuntime::kLlamaCpp:
      // -fa on: quantized V needs flash attention, and kvfold simulates its path (the query
      // rounded to the K type's dot-product type).
      s = {"gguf", k.cache_k, k.cache_v,
           "llama-server -m " + output + " -fa on -ctk " + k.cache_k + " -ctv " + k.cache_v};
      break;
    case PlanRuntime::kVllm:
      s = {"hf", k.cache_k, k.cache_v,
           "vllm serve " + output + (k.cache_k == "fp8" ? " --kv-cache-dtype fp8" : "") +
               (per_layer ? " --trust-remote-code" : "")};
      break;
    default:
      s = {"hf", "", "",
           "kvfold eval " + output + " --text TEXT" +
               (k.kv_cache.empty() ? "" : " --kv-cache '" + k.kv_cache + "'")};
  }
  return s;
}

}  // namespace kvfold
