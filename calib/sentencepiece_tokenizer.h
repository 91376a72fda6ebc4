// A sentencepiece tokenizer.model, through the dlopen'd shim (calib/spm_shim): Debian's
// sentencepiece and libtorch's protobuf collide when both are linked, RTLD_DEEPBIND keeps them
// apart.
#pragma once

#include <memory>
#include <set>
#include <string>
#include <utility>

#include "calib/tokenizer.h"

namespace kvfold {

class SentencePieceTokenizer : public Tokenizer {
 public:
  static std::unique_ptr<Tokenizer> Load(const std::string& model_path);
  ~SentencePieceTokenizer() override;

  std::vector<std::int32_t> Encode(std::string_view text) const override;
  // In pieces of at most 256 KiB (~25 MB of sentencepiece's memory each) cut at seams
  // (calib/seam_encode.h) where the vocabulary allows it: memory for one piece, not the text,
  // and no more text read than `min_ids` needs; pieces encoded on `threads` threads at once.
  std::vector<std::int32_t> EncodePrefix(std::string_view text, std::size_t min_ids,
                                         int threads) const override;
  // The seams EncodePrefix does not cut (calib/seam_encode.h's rule for the vocabulary), read
  // from the pieces when asked: once per long text encoded, not at every load.
  std::set<std::pair<char, char>> CrossingSeams() const;
  std::string Decode(const std::vector<std::int32_t>& ids) const override;
  int vocab_size() const override;
  int bos_id() const override;
  int eos_id() const override;

  // Every piece with its score and kind (GGUF's token types: 1 normal, 2 unknown, 3 control,
  // 5 unused, 6 byte), as llama.cpp's converter reads them.
  struct Piece {
    std::string text;
    float score = 0;
    int kind = 1;
  };
  std::vector<Piece> Pieces() const;

 private:
  SentencePieceTokenizer(std::string path, void* handle)
      : Tokenizer(std::move(path)), handle_(handle) {}
  void* handle_ = nullptr;
};

}  // namespace kvfold
