// KV-cache quantization passes (issue 5):
//   kv-scales   static FP8 (e4m3) KV scales from calibration, written the way vLLM reads
//               compressed-tensors checkpoints (self_attn.k_scale / v_scale + kv_cache_scheme)
//   kv-balance  MiKV's query/key channel balancer, folded into W_Q / W_K (logits unchanged)
//   kv-mixed    the MiKV mixed-precision table a runtime needs (formats/kv_mixed_table.h)
// The math is exposed for the tests.
#pragma once

#include <memory>
#include <vector>

#include "calib/kv_statistics.h"
#include "converter/passes/gqa_fold.h"
#include "converter/passes/pass.h"

namespace kvfold {

std::unique_ptr<Pass> CreateKvScales(const PassSpec& spec, const ModelConfig& config);
std::unique_ptr<Pass> CreateKvBalance(const PassSpec& spec, const ModelConfig& config);
std::unique_ptr<Pass> CreateKvMixed(const PassSpec& spec, const ModelConfig& config);

// FP8 scale per KV head (per_head) or one for the layer: amax / 448 of the channels' calibrated
// extremes [KV d]; a head that never left zero gets scale 1.
std::vector<float> Fp8Scales(const std::vector<float>& lo, const std::vector<float>& hi,
                             std::int64_t kv_heads, std::int64_t head_dim, bool per_head);

// MiKV's balancer: per KV head and channel a factor b = (max|q| / max|k|)^alpha (alpha = 0.5:
// both sides end with the same maximum), from the calibration maxima of the group's queries
// [H x units] and of the keys [KV x units]. With RoPE a unit is a rotary pair (c, c + d/2) and
// both channels share its factor; without RoPE a unit is a channel. Returns [KV d] factors.
std::vector<double> BalanceFactors(const std::vector<float>& query_max,
                                   const std::vector<float>& key_max, std::int64_t heads,
                                   std::int64_t kv_heads, std::int64_t head_dim, double alpha,
                                   bool rotary_pairs);

// Keys of KV head g scaled by b, the queries reading it by 1/b, channel by channel: scores and
// logits are unchanged (biases included).
void FoldBalance(AttentionProjections& p, const std::vector<double>& factors);

}  // namespace kvfold
