// tokenizer.json "model" of type BPE: vocabulary, ranked merges (written as "a b" strings or
// ["a", "b"] pairs), ignore_merges, byte_fallback to <0xNN> pieces, unk_token and fuse_unk.
// Merging follows the reference implementations: the lowest-ranked adjacent pair first, the
// leftmost on a tie, with a heap so a whole unsplit text (sentencepiece-style files have no
// pre-tokenizer) stays O(n log n).
// Ids index a dense table, so they are bounded by the entries: every id must be below
// TokenIdLimit(vocab entries + added tokens), twice the entries + kIdSlack.
#pragma once

#include <cstdint>
#include <nlohmann/json_fwd.hpp>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace kvfold::hf {

constexpr std::int64_t kIdSlack = 1024;
std::int64_t TokenIdLimit(std::size_t entries);

// Words repeat: one Encode of a text remembers the recent ones (bounded; cleared when full). Each
// call has its own, so that texts encode on several threads at once (calib/seam_encode.h).
using WordCache = std::unordered_map<std::string, std::vector<std::int32_t>>;

class BpeModel {
 public:
  // `added_tokens`: how many added tokens AddToken will register after the vocabulary.
  BpeModel(const nlohmann::json& model, const std::string& where, std::size_t added_tokens);

  // Appends the ids of one pre-tokenized word.
  void Encode(const std::string& word, std::vector<std::int32_t>& out, WordCache& cache) const;

  // Registers an added token: its id is found by content like a vocabulary entry's. Fails naming
  // the file when `id` is not below the bound.
  void AddToken(const std::string& content, std::int32_t id);
  std::int32_t Find(std::string_view token) const;  // -1 when absent
  const std::string& Token(std::int32_t id) const;  // empty when no token has the id
  int vocab_size() const { return static_cast<int>(tokens_.size()); }

 private:
  void Merge(std::vector<std::int32_t>& ids, std::vector<std::size_t>& starts) const;
  void Emit(std::string_view symbol, std::int32_t id, std::vector<std::int32_t>& out,
            bool& last_was_unk) const;

  std::string where_;
  std::int64_t id_limit_ = 0;
  std::unordered_map<std::string, std::int32_t> ids_;
  std::vector<std::string> tokens_;
  struct MergeRule {
    std::int32_t rank;
    std::int32_t merged;
  };
  std::unordered_map<std::uint64_t, MergeRule> merges_;  // key: left id << 32 | right id
  std::int32_t unk_id_ = -1;
  bool ignore_merges_ = false;
  bool byte_fallback_ = false;
  bool fuse_unk_ = false;
};

}  // namespace kvfold::hf
