// The registry: every pass kvfold has, with its parameters. Adding a pass = a header, a source
// file, one entry here, one test.
#include "converter/passes/cross_layer_passes.h"
#include "converter/passes/gqa_passes.h"
#include "converter/passes/heal_pass.h"
#include "converter/passes/kv_quant_passes.h"
#include "converter/passes/norm_analysis_pass.h"
#include "converter/passes/pass.h"

namespace kvfold {

const std::vector<PassInfo>& PassRegistry() {
  using T = ParamType;
  static const std::vector<PassInfo> registry = {
      {"gqa-meanpool",
       "KV heads -> fewer KV heads by averaging each group's K/V projections (uptraining baseline)",
       {{"kv-heads", T::kIntList,
         "target KV heads: N for every layer, or one count per layer (8,4,4,2,...); each must "
         "divide the layer's current count"}},
       &CreateGqaMeanpool},
      {"gqa-svd",
       "KV heads -> fewer KV heads by per-group PCA of calibration K/V, folded into the weights",
       {{"kv-heads",
         T::kIntList,
         "target KV heads: N for every layer, one count per layer (8,4,4,2,...; written as "
         "DeciLM / GGUF deci), or auto (chosen per layer by measured fold error under "
         "kv-head-total); each must divide the layer's current count",
         nullptr,
         {"auto"}},
        {"kv-head-total",
         T::kInt,
         "the KV heads of all layers together",
         nullptr,
         {},
         nullptr,
         "kv-heads=auto"},
        {"rope",
         T::kChoice,
         "commute: vanilla GQA output; reconstruct: post-RoPE key PCA (needs kvfold's runtime)",
         "commute",
         {"commute", "reconstruct"}},
        {"weight",
         T::kChoice,
         "query: weight key errors by the query energy reading them (the expected score error); "
         "none: plain key energy, the paper's objective",
         "query",
         {"none", "query"}},
        {"value-weight",
         T::kChoice,
         "none: plain value energy; output: the error of what W_O makes of the values (issue 16)",
         "none",
         {"none", "output"}},
        {"qk-norm",
         T::kChoice,
         "exact: refuse models with per-head q/k RMSNorm (Qwen3, Gemma 3), where no fold is "
         "exact; approximate: fold their normalised keys, exact only where a group's heads are "
         "equal up to a factor (docs/gqa.md)",
         "exact",
         {"exact", "approximate"}},
        {"refit",
         T::kChoice,
         "o: refit o_proj by least squares so the layer's attention output matches the layer "
         "before the fold, on the converted model's own hidden states (needs --calibrate-on "
         "converted); none: keep the folded o_proj",
         "o",
         {"none", "o"}},
        {"ridge",
         T::kNumber,
         "auto: chosen on held-out calibration windows (every fourth; keeps o_proj when no ridge "
         "helps there); R >= 0: relative to the context energy",
         "auto",
         {"auto"},
         nullptr,
         "refit=o"}},
       &CreateGqaSvd},
      {"heal",
       "Layer-wise healing after a lossy K/V pass: Adam on W_Q/W_K/W_V/W_O (and q/k/v biases) so "
       "that each layer's attention output on the converted model's own hidden states matches "
       "the source layer's; stopped on held-out calibration windows (docs/heal.md)",
       {{"target",
         T::kChoice,
         "layer: the source layer's attention output on the converted model's hidden states; "
         "trajectory: the source model's own residual stream after the attention (a second, "
         "source hidden stream; the healed attention also corrects the drift of the layers below); "
         "logits: the KL of the source model's next-token distributions, through the source "
         "layers above (models up to 1 GiB of float32 weights)",
         "layer",
         {"layer", "trajectory", "logits"}},
        {"windows", T::kInt,
         "calibration windows trained on (the first ones; every fourth held out)", "256"},
        {"steps", T::kInt, "Adam steps at most", "400"},
        {"lr", T::kNumber, "Adam's step relative to each matrix's RMS, on a cosine schedule",
         "0.05"},
        {"batch", T::kInt, "windows per step", "4"},
        {"check-every", T::kInt, "steps between held-out checks", "10"},
        {"patience", T::kInt, "checks without improvement before stopping", "3"},
        {"seed", T::kInt, "the order the fit windows are visited in (and rank's random B)", "0"},
        {"rank", T::kInt,
         "0: train the whole matrices; R > 0: train a rank-R delta W + A B of each (A zero at "
         "the start, B a fixed random draw)",
         "0"}},
       &CreateHeal},
      {"kv-norm-analysis",
       "Key L2 norm vs attention per layer/KV head (arXiv 2406.11430); writes the eviction policy "
       "table kv_eviction_policy.json/.safetensors beside the model. Runs alone",
       {{"budget", T::kNumber, "attention mass a head may lose at its recommended keep ratio",
         "0.1"},
        {"max-alr-ratio", T::kNumber,
         "exempt a head when its ALR exceeds this times a random order's", "0.5"}},
       &CreateNormAnalysis},
      {"kv-scales",
       "Static FP8 (e4m3) KV-cache scales from calibration (amax / 448 of post-RoPE keys and of "
       "values) as self_attn.k_scale/v_scale plus compressed-tensors kv_cache_scheme: vLLM loads "
       "them",
       {{"format", T::kChoice, "the scale format (the only one)", "vllm-fp8", {"vllm-fp8"}},
        {"strategy",
         T::kChoice,
         "tensor: one scale per layer, shape [1]; head: per KV head, [KV, 1, 1], "
         "compressed-tensors attn_head",
         "tensor",
         {"tensor", "head"}}},
       &CreateKvScales},
      {"kv-balance",
       "MiKV query/key channel balancing: keys x b, queries x 1/b per rotary pair (b = (max|q| / "
       "max|k|)^alpha), folded into W_K/W_Q; logits unchanged, key outliers tamed for low-bit keys",
       {{"alpha", T::kNumber, "migration strength in [0, 1] (0.5: equal maxima)", "0.5"}},
       &CreateKvBalance},
      {"kv-mixed",
       "MiKV mixed-precision table (kv_mixed_precision.json/.safetensors beside the model): "
       "important tokens in high precision, the rest low-bit; calibrated per-channel key ranges",
       {{"bits", T::kInt, "low precision of keys and values, 1..8", "4"},
        {"key-bits", T::kInt, "low precision of keys, 1..8", nullptr, {}, "bits"},
        {"value-bits", T::kInt, "low precision of values, 1..8", nullptr, {}, "bits"},
        {"hi-bits", T::kInt,
         "precision of important tokens (16 = unquantized, the only one simulated)", "16"},
        {"keep", T::kNumber, "fraction of tokens in high precision, in (0, 1]", "0.2"},
        {"recent", T::kNumber, "share of that budget reserved for the newest tokens, in [0, 1]",
         "0.5"},
        {"key-axis",
         T::kChoice,
         "channel: static calibrated per-channel ranges; token: per-token groups",
         "channel",
         {"channel", "token"}},
        {"value-axis", T::kChoice, "per-token value groups (the only one)", "token", {"token"}},
        {"group", T::kInt, "channels per per-token group (0 = head_dim)", "0"},
        {"protect", T::kIntSet, "layers left unquantized, e.g. protect=0,1", "none"}},
       &CreateKvMixed},
      {"mlkv",
       "Cross-layer KV sharing (MLKV, arXiv 2406.09297): N layers compute K/V, each layer reads "
       "the nearest one at or below it (pythia-mlkv's choice); output is lckv-llama",
       {{"kv-layers", T::kInt, "layers that keep K/V, 1..L"},
        {"init",
         T::kChoice,
         "calib: the shared K/V fitted by reduced-rank least squares to every reader's own K/V, "
         "decoders folded into W_Q/W_O; mean: pythia-mlkv's running average",
         "calib",
         {"calib", "mean"}}},
       &CreateMlkv},
      {"lckv",
       "Cross-layer KV sharing (LCKV, arXiv 2405.10637): layers read the top layer's K/V of "
       "earlier tokens, except w warm-up layers (ceil(w/2) bottom, floor(w/2) top); output is "
       "lckv-llama",
       {{"warmup", T::kInt, "warm-up layers keeping their own K/V", "2"},
        {"init",
         T::kChoice,
         "calib: fitted like mlkv; mean: whyNLP/LCKV's uniform average",
         "calib",
         {"calib", "mean"}}},
       &CreateLckv},
  };
  return registry;
}

}  // namespace kvfold
