// How a HuggingFace Llama-family checkpoint maps onto llama.cpp's GGUF (docs/formats.md, "GGUF"):
// the architecture name, the metadata keys, tensor names and the row permutation of Q and K.
// Pure functions of the config and tensor ids, shared by the exporter, inspect and the tests.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "formats/gguf.h"
#include "formats/model_config.h"
#include "formats/tensor_names.h"

namespace kvfold {

// llama.cpp's architecture for `config`: "llama" (Llama, Mistral), "qwen2", "qwen3", "phi3",
// "deci", "gemma2", "gemma3". Throws
// Error naming `where` and what to use instead for what llama.cpp cannot run: layers sharing
// K/V (LCKV/MLKV), reconstruct-mode keys, dynamic RoPE scaling, MLP biases.
std::string GgufArchitecture(const ModelConfig& config, const std::string& where);

// "blk.3.attn_q.weight" for {kQProj, 3}; throws Error naming `where` for a role llama.cpp has
// no tensor for (vLLM's k_scale/v_scale, kvfold's key projections). Gemma's norms take
// llama.cpp's Gemma names (post_attention_layernorm is post_attention_norm there).
std::string GgufTensorName(const TensorId& id, const std::string& where,
                           const std::string& architecture = "");
bool IsGemma(const std::string& architecture);  // gemma2, gemma3
// What llama.cpp's converter adds to every norm weight: 1 for Gemma ((1 + w) stored as is),
// else 0.
float NormWeightShift(const std::string& architecture);
// The name of a tensor as the checkpoint stores it (formats/stored_layout.h): Phi-3's fused
// self_attn.qkv_proj as blk.N.attn_qkv, mlp.gate_up_proj as blk.N.ffn_up (gate rows first, as
// llama.cpp's SwiGLU splits it); others as GgufTensorName.
std::string GgufStoredTensorName(const std::string& hf_name, const std::string& where);
// The inverse, for reading a GGUF back; nullopt for names kvfold does not write.
std::optional<TensorId> TensorIdOfGgufName(const std::string& name);

// Whether rows of this tensor are permuted from HF's rotate_half layout (each head's first half
// of dimensions, then its second half) to ggml's adjacent pairs (llama.cpp's "normal" RoPE,
// which the llama architecture uses; qwen2/qwen3 use NEOX RoPE, HF's own layout).
bool PermutesRows(const std::string& architecture, TensorRole role);
// Output row of input row `row` under that permutation (within a head of `head_dim` rows:
// row i of the first half goes to 2i, row i of the second half to 2i + 1).
std::int64_t PermutedRow(std::int64_t row, std::int64_t head_dim);

// rope_freqs.weight for rope_scaling llama3: factor j divides RoPE frequency j (what llama.cpp
// multiplies into each angle's divisor), from kvfold's own RoPE frequencies. Empty otherwise.
std::vector<float> RopeFrequencyFactors(const ModelConfig& config);

// The architecture keys (`<arch>.*`) llama.cpp reads for `config`.
void AddArchitectureMetadata(const ModelConfig& config, const std::string& architecture,
                             GgufMetadata& metadata);

// general.file_type for 2-D weights stored as `type` (F32 0, F16 1, BF16 32).
std::uint32_t GgufFileType(GgmlType type);

}  // namespace kvfold
