#include "calib/hf/added_tokens.h"

#include "calib/hf/utf8.h"

namespace kvfold::hf {

AddedTokenSplitter::AddedTokenSplitter(std::vector<AddedToken> tokens)
    : tokens_(std::move(tokens)) {
  for (std::size_t t = 0; t < tokens_.size(); ++t) {
    int node = 0;
    for (unsigned char c : tokens_[t].content) {
      auto it = trie_[static_cast<std::size_t>(node)].children.find(c);
      if (it == trie_[static_cast<std::size_t>(node)].children.end()) {
        trie_.emplace_back();
        it = trie_[static_cast<std::size_t>(node)]
                 .children.emplace(c, static_cast<int>(trie_.size() - 1))
                 .first;
      }
      node = it->second;
    }
    if (node != 0) trie_[static_cast<std::size_t>(node)].token = static_cast<int>(t);
  }
}

int AddedTokenSplitter::LongestAt(std::string_view text, std::size_t at,
                                  std::size_t& length) const {
  int found = -1;
  int node = 0;
  for (std::size_t j = at; j < text.size(); ++j) {
    const auto& children = trie_[static_cast<std::size_t>(node)].children;
    const auto it = children.find(static_cast<unsigned char>(text[j]));
    if (it == children.end()) break;
    node = it->second;
    if (trie_[static_cast<std::size_t>(node)].token >= 0) {
      found = trie_[static_cast<std::size_t>(node)].token;
      length = j + 1 - at;
    }
  }
  return found;
}

std::vector<Section> AddedTokenSplitter::Split(std::string_view text) const {
  std::vector<Section> sections;
  std::size_t start = 0, i = 0;
  while (i < text.size()) {
    std::size_t length = 0;
    const int token = tokens_.empty() ? -1 : LongestAt(text, i, length);
    if (token < 0) {
      ++i;
      continue;
    }
    if (i > start) sections.push_back({std::string(text.substr(start, i - start)), -1});
    sections.push_back({tokens_[static_cast<std::size_t>(token)].content, token});
    i += length;
    start = i;
  }
  if (start < text.size()) sections.push_back({std::string(text.substr(start)), -1});
  for (std::size_t s = 0; s < sections.size(); ++s) {
    if (sections[s].token < 0) continue;
    const AddedToken& t = tokens_[static_cast<std::size_t>(sections[s].token)];
    if (t.lstrip && s > 0 && sections[s - 1].token < 0)
      sections[s - 1].text = std::string(TrimEnd(sections[s - 1].text));
    if (t.rstrip && s + 1 < sections.size() && sections[s + 1].token < 0) {
      sections[s + 1].text = std::string(TrimStart(sections[s + 1].text));
    }
  }
  return sections;
}

}  // namespace kvfold::hf
