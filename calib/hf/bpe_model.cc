#include "calib/hf/bpe_model.h"

#include <algorithm>
#include <cstdio>
#include <nlohmann/json.hpp>
#include <queue>

#include "calib/hf/tokenizer_json.h"
#include "calib/hf/utf8.h"
#include "formats/error.h"

namespace kvfold::hf {
namespace {

constexpr std::size_t kCacheEntries = 1 << 16;
constexpr std::size_t kCachedWordBytes = 256;

std::uint64_t PairKey(std::int32_t left, std::int32_t right) {
  return (static_cast<std::uint64_t>(static_cast<std::uint32_t>(left)) << 32) |
         static_cast<std::uint32_t>(right);
}

bool NullOrEmpty(const nlohmann::json& model, const char* key) {
  return !model.contains(key) || model[key].is_null() ||
         (model[key].is_string() && model[key].get<std::string>().empty());
}

}  // namespace

std::int64_t TokenIdLimit(std::size_t entries) {
  return std::min<std::int64_t>(2 * static_cast<std::int64_t>(entries) + kIdSlack, 1 << 30);
}

BpeModel::BpeModel(const nlohmann::json& model, const std::string& where, std::size_t added_tokens)
    : where_(where) {
  const std::string type = ComponentType(model, where, "model");
  if (type != "BPE") Unsupported(where, "model", type);
  for (const char* key : {"continuing_subword_prefix", "end_of_word_suffix"}) {
    if (!NullOrEmpty(model, key)) Unsupported(where, "BPE model", std::string("with ") + key);
  }
  if (model.contains("dropout") && !model["dropout"].is_null() &&
      model["dropout"].get<double>() != 0.0) {
    Unsupported(where, "BPE model", "with dropout");
  }
  if (!model.contains("vocab") || !model["vocab"].is_object())
    Fail(where, "BPE model without a \"vocab\" object");
  id_limit_ = TokenIdLimit(model["vocab"].size() + added_tokens);
  for (const auto& [token, id] : model["vocab"].items()) {
    if (!id.is_number_integer() || id.get<std::int64_t>() < 0 ||
        id.get<std::int64_t>() >= (1 << 30)) {
      Fail(where, "vocab entry " + token + " has no valid id");
    }
    AddToken(token, id.get<std::int32_t>());
  }
  const auto& merges = RequireArray(model, "merges", where);
  std::int32_t rank = 0;
  for (const auto& m : merges) {
    std::string left, right;
    if (m.is_string()) {
      const std::string s = m.get<std::string>();
      const auto space = s.find(' ');
      if (space == std::string::npos) Fail(where, "merge \"" + s + "\" is not two tokens");
      left = s.substr(0, space);
      right = s.substr(space + 1);
    } else if (m.is_array() && m.size() == 2 && m[0].is_string() && m[1].is_string()) {
      left = m[0].get<std::string>();
      right = m[1].get<std::string>();
    } else {
      Fail(where, "merge " + std::to_string(rank) + " is neither \"a b\" nor [\"a\", \"b\"]");
    }
    const std::int32_t l = Find(left), r = Find(right), merged = Find(left + right);
    if (l < 0 || r < 0 || merged < 0)
      Fail(where, "merge \"" + left + " " + right + "\" uses a token not in the vocab");
    merges_[PairKey(l, r)] =
        MergeRule{rank++, merged};  // a repeated pair keeps its last rank, as in HF
  }
  ignore_merges_ = OptionalBool(model, "ignore_merges", false, where);
  byte_fallback_ = OptionalBool(model, "byte_fallback", false, where);
  fuse_unk_ = OptionalBool(model, "fuse_unk", false, where);
  if (!NullOrEmpty(model, "unk_token")) {
    unk_id_ = Find(model["unk_token"].get<std::string>());
    if (unk_id_ < 0) Fail(where, "unk_token is not in the vocab");
  }
}

void BpeModel::AddToken(const std::string& content, std::int32_t id) {
  if (id < 0 || id >= id_limit_) {
    Fail(where_, "token " + content + " has id " + std::to_string(id) +
                     ", but ids must stay below " + std::to_string(id_limit_) +
                     " (twice the vocab and added tokens + " + std::to_string(kIdSlack) +
                     ": a larger id would leave a gap of unused ids)");
  }
  ids_[content] = id;
  if (static_cast<std::size_t>(id) >= tokens_.size())
    tokens_.resize(static_cast<std::size_t>(id) + 1);
  tokens_[static_cast<std::size_t>(id)] = content;
}

std::int32_t BpeModel::Find(std::string_view token) const {
  const auto it = ids_.find(std::string(token));
  return it == ids_.end() ? -1 : it->second;
}

const std::string& BpeModel::Token(std::int32_t id) const {
  static const std::string kNone;
  return id >= 0 && static_cast<std::size_t>(id) < tokens_.size()
             ? tokens_[static_cast<std::size_t>(id)]
             : kNone;
}

void BpeModel::Merge(std::vector<std::int32_t>& ids, std::vector<std::size_t>& starts) const {
  const std::size_t n = ids.size();
  std::vector<std::int64_t> prev(n), next(n);
  for (std::size_t i = 0; i < n; ++i) {
    prev[i] = static_cast<std::int64_t>(i) - 1;
    next[i] = i + 1 < n ? static_cast<std::int64_t>(i) + 1 : -1;
  }
  struct Candidate {
    std::int32_t rank;
    std::size_t left;  // node index; nodes keep their first symbol's position, so it orders ties
    std::int32_t left_id, right_id;
    bool operator>(const Candidate& o) const {
      return rank != o.rank ? rank > o.rank : left > o.left;
    }
  };
  std::priority_queue<Candidate, std::vector<Candidate>, std::greater<>> queue;
  auto consider = [&](std::int64_t left) {
    if (left < 0 || next[left] < 0 || ids[left] < 0 || ids[next[left]] < 0) return;
    const auto it = merges_.find(PairKey(ids[left], ids[next[left]]));
    if (it != merges_.end())
      queue.push({it->second.rank, static_cast<std::size_t>(left), ids[left], ids[next[left]]});
  };
  for (std::size_t i = 0; i + 1 < n; ++i) consider(static_cast<std::int64_t>(i));
  std::vector<bool> gone(n, false);
  while (!queue.empty()) {
    const Candidate c = queue.top();
    queue.pop();
    const std::int64_t right = next[c.left];
    // Stale: one side merged since (ids only grow into longer tokens, so equal ids mean current).
    if (gone[c.left] || right < 0 || ids[c.left] != c.left_id || ids[right] != c.right_id) continue;
    ids[c.left] = merges_.at(PairKey(c.left_id, c.right_id)).merged;
    gone[right] = true;
    next[c.left] = next[right];
    if (next[right] >= 0) prev[next[right]] = static_cast<std::int64_t>(c.left);
    consider(prev[c.left]);
    consider(static_cast<std::int64_t>(c.left));
  }
  std::vector<std::int32_t> merged_ids;
  std::vector<std::size_t> merged_starts;
  for (std::int64_t i = n ? 0 : -1; i >= 0; i = next[i]) {
    merged_ids.push_back(ids[i]);
    merged_starts.push_back(starts[i]);
  }
  ids = std::move(merged_ids);
  starts = std::move(merged_starts);
}

void BpeModel::Emit(std::string_view symbol, std::int32_t id, std::vector<std::int32_t>& out,
                    bool& last_was_unk) const {
  if (id >= 0) {
    out.push_back(id);
    last_was_unk = false;
    return;
  }
  if (byte_fallback_) {
    std::vector<std::int32_t> bytes;
    for (unsigned char b : symbol) {
      char name[8];
      std::snprintf(name, sizeof name, "<0x%02X>", b);
      bytes.push_back(Find(name));
      if (bytes.back() < 0) break;
    }
    if (!bytes.empty() && bytes.back() >= 0) {
      out.insert(out.end(), bytes.begin(), bytes.end());
      last_was_unk = false;
      return;
    }
  }
  if (unk_id_ < 0) {
    Fail(where_, "the text has \"" + std::string(symbol) +
                     "\", which no token covers, and the model has no unk_token");
  }
  if (!(fuse_unk_ && last_was_unk)) out.push_back(unk_id_);
  last_was_unk = true;
}

void BpeModel::Encode(const std::string& word, std::vector<std::int32_t>& out,
                      WordCache& cache) const {
  if (word.empty()) return;
  if (ignore_merges_) {
    const std::int32_t whole = Find(word);
    if (whole >= 0) {
      out.push_back(whole);
      return;
    }
  }
  const bool cacheable = word.size() < kCachedWordBytes;
  if (cacheable) {
    const auto hit = cache.find(word);
    if (hit != cache.end()) {
      out.insert(out.end(), hit->second.begin(), hit->second.end());
      return;
    }
  }
  std::vector<std::int32_t> ids;
  std::vector<std::size_t> starts;
  for (std::size_t i = 0; i < word.size(); i += CodePointLength(word, i)) {
    ids.push_back(Find(std::string_view(word).substr(i, CodePointLength(word, i))));
    starts.push_back(i);
  }
  Merge(ids, starts);
  std::vector<std::int32_t> encoded;
  bool last_was_unk = false;
  for (std::size_t k = 0; k < ids.size(); ++k) {
    const std::size_t end = k + 1 < starts.size() ? starts[k + 1] : word.size();
    Emit(std::string_view(word).substr(starts[k], end - starts[k]), ids[k], encoded, last_was_unk);
  }
  out.insert(out.end(), encoded.begin(), encoded.end());
  if (cacheable) {
    if (cache.size() >= kCacheEntries) cache.clear();
    cache.emplace(word, std::move(encoded));
  }
}

}  // namespace kvfold::hf
