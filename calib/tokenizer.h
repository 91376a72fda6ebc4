// Tokenizer: sentencepiece tokenization from a checkpoint's tokenizer.model, through the
// dlopen'd shim (calib/spm_shim). Encoding adds no BOS/EOS, as the perplexity protocol wants.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace kvfold {

class Tokenizer {
 public:
  // Loads `model_path` (a sentencepiece model); throws Error naming the file on failure.
  static std::unique_ptr<Tokenizer> Load(const std::string& model_path);
  ~Tokenizer();

  std::vector<std::int32_t> Encode(std::string_view text) const;
  std::string Decode(const std::vector<std::int32_t>& ids) const;
  int vocab_size() const;
  int bos_id() const;
  int eos_id() const;
  const std::string& path() const { return path_; }

 private:
  Tokenizer() = default;
  std::string path_;
  void* handle_ = nullptr;
};

}  // namespace kvfold
