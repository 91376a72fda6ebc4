// An HF tokenizers tokenizer.json read natively: added tokens, normalizer, pre-tokenizer, BPE model
// and decoder (calib/hf/), with BOS/EOS from the post-processor and tokenizer_config.json. Encoding
// follows the reference implementations step by step: split out added tokens, normalize each
// stretch between them, split out normalized added tokens, pre-tokenize, BPE each word.
#pragma once

#include <memory>
#include <string>

#include "calib/tokenizer.h"

namespace kvfold {

namespace hf {
class BpeModel;
class Normalizer;
class PreTokenizer;
class Decoder;
class AddedTokenSplitter;
class MatchBudget;
}  // namespace hf

class HfTokenizer : public Tokenizer {
 public:
  // `json_path` is a tokenizer.json; tokenizer_config.json beside it is read when present.
  static std::unique_ptr<Tokenizer> Load(const std::string& json_path);
  ~HfTokenizer() override;

  std::vector<std::int32_t> Encode(std::string_view text) const override;
  std::string Decode(const std::vector<std::int32_t>& ids) const override;
  int vocab_size() const override;
  int model_vocab_size() const override { return model_vocab_size_; }
  int bos_id() const override { return bos_id_; }
  int eos_id() const override { return eos_id_; }

 private:
  explicit HfTokenizer(std::string path);
  static std::unique_ptr<Tokenizer> LoadComponents(const std::string& json_path);
  void EncodeStretch(const std::string& text, int section_index, hf::MatchBudget& budget,
                     std::vector<std::int32_t>& out) const;

  std::unique_ptr<hf::BpeModel> model_;
  std::unique_ptr<hf::Normalizer> normalizer_;
  std::unique_ptr<hf::PreTokenizer> pre_tokenizer_;
  std::unique_ptr<hf::Decoder> decoder_;
  std::string decoder_error_;  // why Decode is refused, when the decoder is unsupported
  std::unique_ptr<hf::AddedTokenSplitter> unnormalized_;  // added tokens matched in the raw text
  std::unique_ptr<hf::AddedTokenSplitter> normalized_;    // those matched after normalization
  int bos_id_ = kNoToken;
  int eos_id_ = kNoToken;
  int model_vocab_size_ = 0;
};

}  // namespace kvfold
