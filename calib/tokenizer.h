// Tokenizer: what calibration and evaluation encode text with. Two formats behind one interface:
// HF tokenizers' tokenizer.json (calib/hf_tokenizer.h, native C++) and a sentencepiece
// tokenizer.model (calib/sentencepiece_tokenizer.h, through the dlopen'd shim). Encoding adds no
// BOS/EOS, as the perplexity protocol wants; bos_id() says what the model input starts with.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace kvfold {

class Tokenizer {
 public:
  // Loads `path` by its name: "tokenizer.json" (with tokenizer_config.json beside it, when
  // present) or a sentencepiece model. Throws Error naming the file on failure.
  static std::unique_ptr<Tokenizer> Load(const std::string& path);
  virtual ~Tokenizer() = default;

  // The ids of `text`, with added tokens written in it matched as tokens and no BOS/EOS added.
  virtual std::vector<std::int32_t> Encode(std::string_view text) const = 0;
  // Encode(text)'s first `min_ids` ids at least (all when 0 or when the text has fewer), the
  // same ids. A tokenizer that can cut a text exactly reads no more of it than that, in pieces
  // encoded on up to `threads` threads (sentencepiece: calib/seam_encode.h); the others encode
  // the whole text in one call.
  virtual std::vector<std::int32_t> EncodePrefix(std::string_view text, std::size_t min_ids,
                                                 int threads) const {
    (void)min_ids;
    (void)threads;
    return Encode(text);
  }
  virtual std::string Decode(const std::vector<std::int32_t>& ids) const = 0;
  virtual int vocab_size() const = 0;
  // The ids a model must have rows for: the vocabulary and every added token that is not special.
  // A special token beyond the model's rows (Gemma 3's tokenizer.json lists its image token at
  // 262144, beyond the text model's 262144) is refused only when a text holds it.
  virtual int model_vocab_size() const { return vocab_size(); }
  // The token a model input starts with, or kNoToken when the tokenizer adds none (Qwen): then
  // the perplexity protocol feeds windows without one (calib/windows.h).
  virtual int bos_id() const = 0;
  virtual int eos_id() const = 0;  // kNoToken when none is declared
  const std::string& path() const { return path_; }

  static constexpr int kNoToken = -1;

 protected:
  explicit Tokenizer(std::string path) : path_(std::move(path)) {}

 private:
  std::string path_;
};

}  // namespace kvfold
