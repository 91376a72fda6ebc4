// tokenizer.json "added_tokens": special and added tokens matched in the text before anything else
// (as HF does: "<unk>" written in the text is the unk token). The longest token starting at the
// earliest position wins; lstrip/rstrip take the whitespace beside a match with it.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <string_view>
#include <vector>

namespace kvfold::hf {

// The longest added token read (as matched, after normalization): finding the longest token at a
// position walks up to its length, at every position of the text.
constexpr std::size_t kMaxAddedTokenBytes = 256;

struct AddedToken {
  std::string content;
  std::int32_t id = 0;
  bool lstrip = false;
  bool rstrip = false;
  bool normalized = false;
  bool special = false;
};

// A stretch of text: an added token (token >= 0) or text between tokens (token < 0).
struct Section {
  std::string text;
  int token = -1;  // index into the splitter's tokens
};

class AddedTokenSplitter {
 public:
  AddedTokenSplitter() = default;
  explicit AddedTokenSplitter(std::vector<AddedToken> tokens);

  // Sections of `text`, with lstrip/rstrip already applied to the text beside each token.
  std::vector<Section> Split(std::string_view text) const;
  const AddedToken& token(int index) const { return tokens_[static_cast<std::size_t>(index)]; }

 private:
  int LongestAt(std::string_view text, std::size_t at, std::size_t& length) const;

  std::vector<AddedToken> tokens_;
  struct Node {
    std::map<unsigned char, int> children;
    int token = -1;
  };
  std::vector<Node> trie_{Node{}};
};

}  // namespace kvfold::hf
