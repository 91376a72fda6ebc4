// ModelSummary: what `kvfold inspect` reports about a checkpoint, and what conversions compare
// before and after (KV-cache bytes per token above all).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "formats/checkpoint.h"

namespace kvfold {

struct ModelSummary {
  std::string path;
  std::string architecture;
  std::string model_type;
  std::string attention;  // "MHA", "GQA" or "MQA"
  std::int64_t layers = 0, hidden = 0, heads = 0, kv_heads = 0, head_dim = 0;
  std::int64_t rotary_dim = 0;  // channels of a head RoPE rotates (Phi-4-mini: 96 of 128)
  std::int64_t intermediate = 0, vocab = 0, max_positions = 0;
  double rope_theta = 0;
  bool rope_theta_defaulted = false;  // not in config.json: transformers' default
  std::string rope_scaling;           // "default", "llama3 (factor 8, ...)", ...
  std::string tokenizer;              // the file eval and convert encode with, or empty
  bool tied_embeddings = false;
  std::string dtype;  // of the attention weights, which the KV cache inherits
  std::int64_t parameters = 0;
  std::int64_t kv_bytes_per_token = 0;
  // Layers with a sliding window (Gemma, Mistral): their count and window, and the whole cache
  // at max_positions tokens, where each holds its window only.
  std::int64_t sliding_layers = 0, sliding_window = 0, kv_bytes_at_max_positions = 0;
  std::int64_t kv_layers = 0;                // layers that compute K/V (all of them unless shared)
  std::string layer_types;                   // cross-layer sharing layout; empty when none
  std::vector<std::int64_t> layer_kv_heads;  // per-layer KV heads; empty when uniform
  int files = 0;
  int tensors = 0;
};

ModelSummary SummarizeCheckpoint(const Checkpoint& checkpoint);
std::string SummaryText(const ModelSummary& summary);
std::string SummaryJson(const ModelSummary& summary);

}  // namespace kvfold
