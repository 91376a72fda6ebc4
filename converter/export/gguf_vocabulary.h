// A model's tokenizer as llama.cpp's GGUF keys store it (tokenizer.ggml.*), read the way
// llama.cpp's own converter reads it:
//  - sentencepiece tokenizer.model -> model "llama": pieces, scores and kinds;
//  - tokenizer.json, byte-level BPE -> model "gpt2": tokens, merges, and the pre-tokenizer
//    llama.cpp names after the file's split regex (llama-bpe, qwen2, gpt-2); a regex llama.cpp
//    has no pre-tokenizer for is refused by name;
//  - tokenizer.json, sentencepiece-style BPE (byte fallback, "▁" spaces: Llama 2, Mistral) ->
//    model "llama", each token scored by the rank of the merge that makes it (llama.cpp's SPM
//    tokenizer merges the highest-scoring pair first, which is BPE's lowest rank first).
// Special tokens: BOS and add_bos_token as kvfold's tokenizer feeds the model (calib/tokenizer.h),
// EOS, unknown and padding tokens, and the chat template from tokenizer_config.json.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "formats/gguf.h"

namespace kvfold {

class Tokenizer;

struct GgufVocabulary {
  std::string model;  // "llama" | "gpt2"
  std::string pre;    // gpt2: llama.cpp's pre-tokenizer name
  std::vector<std::string> tokens;
  std::vector<float> scores;  // llama
  std::vector<std::int32_t>
      types;  // 1 normal, 2 unknown, 3 control, 4 user-defined, 5 unused, 6 byte
  std::vector<std::string> merges;  // gpt2
  std::int64_t bos = -1, eos = -1, unk = -1, pad = -1;
  bool add_bos = false;
  // llama: whether llama.cpp's sentencepiece tokenizer puts "▁" before the text (its default).
  // A tokenizer.json whose normalizer and pre-tokenizer add none (Gemma's) says false.
  bool add_space_prefix = true;
  std::string chat_template;
  // What a user should know about running the tokenizer in llama.cpp (printed by export).
  std::vector<std::string> notes;
};

// `tokenizer` is the loaded tokenizer of the file at tokenizer->path(); the vocabulary is padded
// to `vocab_size` entries (the model's embedding rows) with unused "[PAD<i>]" tokens.
GgufVocabulary ReadGgufVocabulary(const Tokenizer& tokenizer, std::int64_t vocab_size);

// The tokenizer.ggml.* keys (and tokenizer.chat_template).
void AddVocabularyMetadata(const GgufVocabulary& vocabulary, GgufMetadata& metadata);

}  // namespace kvfold
