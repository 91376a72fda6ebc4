#include "calib/tokenizer.h"

#include "calib/hf_tokenizer.h"
#include "calib/sentencepiece_tokenizer.h"

namespace kvfold {

std::unique_ptr<Tokenizer> Tokenizer::Load(const std::string& path) {
  const std::string name = path.substr(path.find_last_of('/') + 1);
  if (name.size() >= 5 && name.compare(name.size() - 5, 5, ".json") == 0)
    return HfTokenizer::Load(path);
  return SentencePieceTokenizer::Load(path);
}

}  // namespace kvfold
