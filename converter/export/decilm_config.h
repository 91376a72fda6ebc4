// The Python configuration class a per-layer KV-head (DeciLM, Nemotron-NAS layout) hf output
// carries: transformers has no nemotron-nas config of its own, so vLLM loads config.json through
// its auto_map (--trust-remote-code). kvfold's own code, written from vLLM's nemotron_nas.py's
// reads: block_configs entries as attributes (attention.n_heads_in_group, ffn.ffn_mult, no_op).
#pragma once

namespace kvfold {

constexpr const char* kDeciConfigFile = "configuration_decilm.py";
extern const char* const kDeciConfigSource;

}  // namespace kvfold
