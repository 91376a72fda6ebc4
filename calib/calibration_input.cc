#include "calib/calibration_input.h"

#include "calib/text.h"
#include "calib/tokenizer.h"
#include "formats/error.h"
#include "formats/mapped_file.h"
#include "formats/sha256.h"
#include "formats/token_ids.h"

namespace kvfold {
namespace {

bool EndsWith(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() &&
         s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

// The tokenizer's ids for `text`; a tokenizer with more pieces than the model has embeddings
// gives ids the model cannot read, named here with the text (`where`) they came from.
std::vector<std::int32_t> Encode(const std::string& text, const Tokenizer& tokenizer,
                                 std::int64_t vocab, const std::string& where,
                                 std::size_t min_ids = 0, int threads = 1) {
  std::vector<std::int32_t> ids = tokenizer.EncodePrefix(text, min_ids, threads);
  for (const std::int32_t id : ids) {
    if (id < 0 || id >= vocab) {
      Fail(where, "the tokenizer " + tokenizer.path() + " gives token id " + std::to_string(id) +
                      ", outside the model's vocabulary of " + std::to_string(vocab) +
                      " (tokenizer and model do not match?)");
    }
  }
  return ids;
}

void ReadJsonLines(const std::string& path, const std::string& bytes, const Tokenizer& tokenizer,
                   std::int64_t vocab, CalibrationTokens& out) {
  if (const auto bad = FindInvalidUtf8(bytes))
    Fail(path, "invalid UTF-8 at byte " + std::to_string(*bad));
  std::vector<std::int32_t> encoded;
  JsonLinesIds parsed =
      ParseJsonLines(bytes, vocab, path, [&](const std::string& where, const std::string& text) {
        const std::vector<std::int32_t> ids = Encode(text, tokenizer, vocab, where);
        encoded.insert(encoded.end(), ids.begin(), ids.end());
      });
  out.format = parsed.documents ? "jsonl-text" : "jsonl-ids";
  out.tokens = parsed.documents ? std::move(encoded) : std::move(parsed.ids);
}

}  // namespace

std::vector<std::int32_t> EncodeTextFile(const std::string& path, const Tokenizer& tokenizer,
                                         std::int64_t vocab_size, std::size_t min_ids,
                                         int threads) {
  return Encode(LoadText(path), tokenizer, vocab_size, path, min_ids, threads);
}

CalibrationTokens LoadCalibrationTokens(const std::string& path, const Tokenizer& tokenizer,
                                        std::int64_t vocab_size, std::size_t min_ids, int threads) {
  CalibrationTokens out;
  if (EndsWith(path, ".jsonl") || EndsWith(path, ".npy")) {
    const std::string bytes = ReadFileToString(path);
    if (bytes.empty()) Fail(path, "empty file");
    out.sha256 = Sha256Hex(bytes);
    if (EndsWith(path, ".npy")) {
      out.format = "npy";
      out.tokens = ParseNpyTokenIds(bytes, vocab_size, path);
    } else {
      ReadJsonLines(path, bytes, tokenizer, vocab_size, out);
    }
    return out;
  }
  const std::string text = LoadText(path);
  out.sha256 = Sha256Hex(text);
  out.tokens = Encode(text, tokenizer, vocab_size, path, min_ids, threads);
  out.format = "text";
  return out;
}

}  // namespace kvfold
