// KV-cache quantization at decode time (issue 5): every scheme stores a token's keys and values
// once, when the token is cached, the way a runtime would, and attention reads the stored
// (fake-quantized) copies. LibTorch-free. Schemes (`--kv-cache 'quant<scheme=...>'`):
//
//   rtn    per-token asymmetric INT keys and values, groups of `group` channels (0 = the head)
//   kivi   KIVI-style: keys per-channel over blocks of `block` tokens, quantized when the block
//          is complete (until then the block stays in full precision, KIVI's residual); values
//          per-token as rtn
//   fp8    static FP8 e4m3 with the checkpoint's vLLM scales (self_attn.k_scale / v_scale, from
//          the kv-scales pass): x' = e4m3(x / scale) * scale
//   ggml   llama.cpp's cache types, `ggml<k=q8_0,v=q4_0>` (or quant<scheme=ggml,k=..,v=..>): each
//          token's K and V rows stored as ggml stores them (calib/ggml_cache_types.h: f16,
//          bf16, q8_0, q5_1, q5_0, q4_1, q4_0, iq4_nl; blocks of 32 along head_dim), read
//          with queries rounded to K's dot-product type and, for q4_1/q5_1 keys, q8_1's f16
//          block sums as score extras, as ggml's CPU flash attention reads them (its f16
//          accumulation of an f16 V is not simulated: docs/kv-quant.md)
//   mikv   MiKV (arXiv 2402.18096): the `keep` fraction of tokens judged important stays in full
//          precision, the rest drops to `bits` (0 = evicted instead: the same selection as an
//          H2O cache). Importance is H2O's: attention received, accumulated as decoding
//          proceeds and summed over the query heads of the KV head; a `recent` share of the
//          high-precision budget always goes to the newest tokens. Demotion is permanent (the
//          full-precision copy is gone). Keys are per-token groups, or per-channel with static
//          calibrated ranges (key-axis=channel, from a kv-mixed table).
// `protect=0,1` layers stay unquantized. The full cache counts 16 bits per element.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "calib/ggml_cache_types.h"
#include "formats/model_config.h"
#include "runtime_check/kv_cache_policy.h"

namespace kvfold {

enum class QuantScheme { kRtn, kKivi, kFp8, kMikv, kGgml };

struct QuantSpec {
  QuantScheme scheme = QuantScheme::kRtn;
  int key_bits = 4, value_bits = 4;  // low precision; mikv: 0 = evict
  int hi_bits = 16;                  // mikv: precision of the important tokens (16 = unquantized)
  std::int64_t group = 0;            // channels per per-token group (0 = head_dim)
  std::int64_t block = 32;           // kivi: tokens per key block
  double keep = 0.2;                 // mikv: fraction of tokens in high precision
  double recent = 0.5;               // mikv: share of that budget reserved for the newest tokens
  bool key_channel = false;          // mikv: key-axis=channel (static calibrated ranges)
  std::vector<int> protect;          // layers left unquantized
  std::string table;                 // mikv: kv-mixed table (kv_mixed_precision.json)
  GgmlCacheType key_type = GgmlCacheType::kF16;    // ggml: llama.cpp's -ctk
  GgmlCacheType value_type = GgmlCacheType::kF16;  // ggml: llama.cpp's -ctv
  std::string Text() const;
};

// Parses "ggml<k=TYPE,v=TYPE>" or
// "quant<scheme=rtn|kivi|fp8|mikv|ggml,k=TYPE,v=TYPE,bits=4,key-bits=N,value-bits=N,hi-bits=16,group=N,
// block=N,keep=F,recent=F,key-axis=token|channel,protect=0,1,table=PATH>". Throws
// Error("--kv-cache: ...").
QuantSpec ParseQuantSpec(const std::string& text);

// Static numbers a scheme reads: fp8 scales per (layer, KV head) and mikv's per-channel key
// ranges per (layer, KV head, channel).
struct QuantCalibration {
  std::vector<float> k_scale, v_scale;  // [every layer's KV heads] (ModelConfig::KvHeadIndex)
  std::vector<float> key_min, key_max;  // [every layer's KV heads * head_dim]
};

class QuantCachePolicy : public KvCachePolicy {
 public:
  // Throws Error when the scheme needs calibration the caller did not supply.
  QuantCachePolicy(const QuantSpec& spec, const ModelConfig& config, QuantCalibration calibration);
  bool Untouched(int layer) const override;
  bool Quantizes(int layer) const override;
  void HeadCache(int layer, const float* qkv, const QkvLayout& layout, std::int64_t b,
                 std::int64_t g, std::int64_t sequence, const HeadCacheOut& out) const override;
  double AverageBits(std::int64_t tokens, std::int64_t from, std::int64_t head_dim) const override;
  bool RoundsQueries(int layer) const override;
  void RoundQueries(int layer, float* q, std::int64_t rows, std::int64_t d,
                    float* extras) const override;
  std::int64_t ScoreExtras(int layer, std::int64_t d) const override;

  // Tokens in high precision that query i reads, for mikv (T tokens); the rest are low.
  std::int64_t HighPrecisionTokens(std::int64_t i) const;

 private:
  bool Protected(int layer) const;
  // A key row of `d` values stored as llama.cpp's K type, in place; its score extras to
  // `extras` (when not null).
  void StoreGgmlKey(float* key, std::int64_t d, float* extras) const;
  QuantSpec spec_;
  std::int64_t layers_ = 0, head_dim_ = 0;
  std::vector<std::int64_t> first_head_;  // per layer: its first KV head's index in the tables
  QuantCalibration calibration_;
};

}  // namespace kvfold
