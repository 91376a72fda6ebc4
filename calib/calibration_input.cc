#include "calib/calibration_input.h"

#include <algorithm>

#include "calib/text.h"
#include "calib/tokenizer.h"
#include "formats/error.h"
#include "formats/mapped_file.h"
#include "formats/parallel_each.h"
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

// The documents of a JSON Lines file, encoded in file order, a batch at a time on `threads`
// threads, until `min_ids` ids (0: all). Lines after that are still parsed and checked.
class DocumentIds {
 public:
  DocumentIds(const Tokenizer& tokenizer, std::int64_t vocab, std::size_t min_ids, int threads)
      : tokenizer_(tokenizer), vocab_(vocab), min_ids_(min_ids), threads_(std::max(1, threads)) {}

  void Add(const std::string& where, const std::string& text) {
    if (min_ids_ != 0 && ids_.size() >= min_ids_) return;
    batch_.push_back({where, text});
    batch_bytes_ += text.size();
    const std::size_t t = static_cast<std::size_t>(threads_);
    if (batch_bytes_ >= kBatchBytes * t || batch_.size() >= kBatchDocuments * t) Flush();
  }

  // Encodes what is queued: in file order, the lowest line's error first.
  void Flush() {
    std::vector<std::vector<std::int32_t>> encoded(batch_.size());
    ParallelEach(batch_.size(), threads_, [&](std::size_t i) {
      encoded[i] = Encode(batch_[i].text, tokenizer_, vocab_, batch_[i].where);
    });
    for (const std::vector<std::int32_t>& ids : encoded)
      ids_.insert(ids_.end(), ids.begin(), ids.end());
    batch_.clear();
    batch_bytes_ = 0;
  }

  std::vector<std::int32_t> Take() {
    Flush();
    return std::move(ids_);
  }

 private:
  static constexpr std::size_t kBatchBytes = 64 << 10;  // per thread
  static constexpr std::size_t kBatchDocuments = 64;    // per thread
  struct Document {
    std::string where, text;
  };
  const Tokenizer& tokenizer_;
  std::int64_t vocab_;
  std::size_t min_ids_;
  int threads_;
  std::vector<Document> batch_;
  std::size_t batch_bytes_ = 0;
  std::vector<std::int32_t> ids_;
};

void ReadJsonLines(const std::string& path, const std::string& bytes, const Tokenizer& tokenizer,
                   std::int64_t vocab, std::size_t min_ids, int threads, CalibrationTokens& out) {
  if (const auto bad = FindInvalidUtf8(bytes))
    Fail(path, "invalid UTF-8 at byte " + std::to_string(*bad));
  DocumentIds documents(tokenizer, vocab, min_ids, threads);
  JsonLinesIds parsed;
  try {
    parsed = ParseJsonLines(
        bytes, vocab, path,
        [&](const std::string& where, const std::string& text) { documents.Add(where, text); });
  } catch (const Error&) {
    documents.Flush();  // a document's error before this line's comes first
    throw;
  }
  out.format = parsed.documents ? "jsonl-text" : "jsonl-ids";
  out.tokens = parsed.documents ? documents.Take() : std::move(parsed.ids);
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
      ReadJsonLines(path, bytes, tokenizer, vocab_size, min_ids, threads, out);
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
