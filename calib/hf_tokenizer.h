// An HF tokenizers tokenizer.json read natively: added tokens, normalizer, pre-tokenizer, BPE model
// and decoder (calib/hf/), with BOS/EOS from the post-processor and tokenizer_config.json. Encoding
// follows the reference implementations step by step: split out added tokens, normalize each
// stretch between them, split out normalized added tokens, pre-tokenize, BPE each word.
#pragma once

#include <cstddef>
#include <memory>
#include <set>
#include <string>
#include <utility>

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
  // In pieces cut at seams (calib/seam_encode.h), each encoded as above: memory for one piece,
  // no more text read than `min_ids` needs, pieces encoded on `threads` threads at once.
  std::vector<std::int32_t> EncodePrefix(std::string_view text, std::size_t min_ids,
                                         int threads) const override;
  // The seams EncodePrefix does not cut (calib/seam_encode.h's rule for the vocabulary).
  std::set<std::pair<char, char>> CrossingSeams() const;
  std::string Decode(const std::vector<std::int32_t>& ids) const override;
  int vocab_size() const override;
  int model_vocab_size() const override { return model_vocab_size_; }
  int bos_id() const override { return bos_id_; }
  int eos_id() const override { return eos_id_; }

 private:
  explicit HfTokenizer(std::string path);
  static std::unique_ptr<Tokenizer> LoadComponents(const std::string& json_path);
  struct EncodeState;  // one Encode's regex budget and word cache
  void EncodeStretch(const std::string& text, int section_index, EncodeState& state,
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
  std::size_t longest_added_token_ = 0;  // bytes, raw or normalized: a seam check's context
};

}  // namespace kvfold
