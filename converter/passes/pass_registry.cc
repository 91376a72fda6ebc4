// The registry: every pass kvfold has, with its parameters. Adding a pass = a header, a source
// file, one entry here, one test.
#include "converter/passes/cross_layer_passes.h"
#include "converter/passes/gqa_passes.h"
#include "converter/passes/kv_quant_passes.h"
#include "converter/passes/norm_analysis_pass.h"
#include "converter/passes/pass.h"

namespace kvfold {

const std::vector<PassInfo>& PassRegistry() {
  static const std::vector<PassInfo> registry = {
      {"gqa-meanpool",
       "KV heads -> fewer KV heads by averaging each group's K/V projections (uptraining baseline)",
       {{"kv-heads",
         "target KV heads: N for every layer, or one count per layer (8,4,4,2,...); each must "
         "divide the layer's current count (required)"}},
       &CreateGqaMeanpool},
      {"gqa-svd",
       "KV heads -> fewer KV heads by per-group PCA of calibration K/V, folded into the weights",
       {{"kv-heads",
         "target KV heads: N for every layer, one count per layer (8,4,4,2,...; written as "
         "DeciLM / GGUF deci), or auto (chosen per layer by measured fold error under "
         "kv-head-total); each must divide the layer's current count (required)"},
        {"kv-head-total", "with kv-heads=auto: the KV heads of all layers together"},
        {"rope",
         "commute (default: vanilla GQA output) | reconstruct (post-RoPE key PCA; needs "
         "kvfold's runtime)"},
        {"weight",
         "query (default: weight key errors by the query energy reading them, i.e. the "
         "expected score error) | none (plain key energy, the paper's objective)"},
        {"value-weight",
         "none (default: plain value energy) | output (the error of what W_O makes of "
         "the values, issue 16)"},
        {"refit",
         "o (default: refit o_proj by least squares so the layer's attention output matches the "
         "layer before the fold, on the converted model's own hidden states; needs --calibrate-on "
         "converted) | none"},
        {"ridge",
         "with refit=o: auto (default: chosen on held-out calibration windows, every fourth; "
         "keeps o_proj when no ridge helps there) | R >= 0 (relative to the context energy)"}},
       &CreateGqaSvd},
      {"kv-norm-analysis",
       "Key L2 norm vs attention per layer/KV head (arXiv 2406.11430); writes the eviction policy "
       "table kv_eviction_policy.json/.safetensors beside the model. Runs alone",
       {{"budget", "attention mass a head may lose at its recommended keep ratio (default 0.1)"},
        {"max-alr-ratio",
         "exempt a head when its ALR exceeds this times a random order's "
         "(default 0.5)"}},
       &CreateNormAnalysis},
      {"kv-scales",
       "Static FP8 (e4m3) KV-cache scales from calibration (amax / 448 of post-RoPE keys and of "
       "values) as self_attn.k_scale/v_scale plus compressed-tensors kv_cache_scheme: vLLM loads "
       "them",
       {{"format", "vllm-fp8 (default; the only one)"},
        {"strategy",
         "tensor (default: one scale per layer, shape [1]) | head (per KV head, [KV, 1, 1], "
         "compressed-tensors attn_head)"}},
       &CreateKvScales},
      {"kv-balance",
       "MiKV query/key channel balancing: keys x b, queries x 1/b per rotary pair (b = (max|q| / "
       "max|k|)^alpha), folded into W_K/W_Q; logits unchanged, key outliers tamed for low-bit keys",
       {{"alpha", "migration strength in [0, 1] (default 0.5: equal maxima)"}},
       &CreateKvBalance},
      {"kv-mixed",
       "MiKV mixed-precision table (kv_mixed_precision.json/.safetensors beside the model): "
       "important tokens in high precision, the rest low-bit; calibrated per-channel key ranges",
       {{"bits", "low precision of keys and values (default 4)"},
        {"key-bits", "low precision of keys (default: bits)"},
        {"value-bits", "low precision of values (default: bits)"},
        {"hi-bits",
         "precision of important tokens (default 16 = unquantized; the only one simulated)"},
        {"keep", "fraction of tokens in high precision (default 0.2)"},
        {"recent", "share of that budget reserved for the newest tokens (default 0.5)"},
        {"key-axis",
         "channel (default: static calibrated per-channel ranges) | token (per-token groups)"},
        {"value-axis", "token (default; the only one)"},
        {"group", "channels per per-token group (default 0 = head_dim)"},
        {"protect", "layers left unquantized, e.g. protect=0,1 (default none)"}},
       &CreateKvMixed},
      {"mlkv",
       "Cross-layer KV sharing (MLKV, arXiv 2406.09297): N layers compute K/V, each layer reads "
       "the "
       "nearest one at or below it (pythia-mlkv's choice); output is lckv-llama",
       {{"kv-layers", "layers that keep K/V, 1..L (required)"},
        {"init",
         "calib (default: the shared K/V fitted by reduced-rank least squares to every "
         "reader's own K/V, decoders folded into W_Q/W_O) | mean (pythia-mlkv's running average)"}},
       &CreateMlkv},
      {"lckv",
       "Cross-layer KV sharing (LCKV, arXiv 2405.10637): layers read the top layer's K/V of "
       "earlier "
       "tokens, except w warm-up layers (ceil(w/2) bottom, floor(w/2) top); output is lckv-llama",
       {{"warmup", "warm-up layers keeping their own K/V (default 2)"},
        {"init", "calib (default: fitted like mlkv) | mean (whyNLP/LCKV's uniform average)"}},
       &CreateLckv},
  };
  return registry;
}

}  // namespace kvfold
