#include "calib/hf/decoders.h"

#include <map>
#include <nlohmann/json.hpp>

#include "calib/hf/pre_tokenizers.h"
#include "calib/hf/regex.h"
#include "calib/hf/tokenizer_json.h"
#include "calib/hf/utf8.h"
#include "formats/error.h"

namespace kvfold::hf {
namespace {

class ByteLevel : public Decoder {
 public:
  std::vector<std::string> Apply(std::vector<std::string> tokens) const override {
    static const std::map<std::string, unsigned char> bytes = [] {
      std::map<std::string, unsigned char> m;
      for (int b = 0; b < 256; ++b) m[ByteLevelAlphabet()[b]] = static_cast<unsigned char>(b);
      return m;
    }();
    std::string text;
    for (const auto& t : tokens) {
      for (std::size_t i = 0; i < t.size(); i += CodePointLength(t, i)) {
        const std::string c = t.substr(i, CodePointLength(t, i));
        const auto it = bytes.find(c);
        if (it != bytes.end())
          text += static_cast<char>(it->second);
        else
          text += c;  // an added token's own text
      }
    }
    return {text};
  }
};

class Replace : public Decoder {
 public:
  Replace(const nlohmann::json& config, const std::string& where)
      : pattern_(ReadPattern(config, where + " Replace decoder")),
        content_(config.value("content", std::string())) {
    if (pattern_.is_regex) Unsupported(where, "Replace decoder", "with a regex");
  }
  std::vector<std::string> Apply(std::vector<std::string> tokens) const override {
    for (auto& t : tokens) t = ReplaceLiteral(t, pattern_.text, content_);
    return tokens;
  }

 private:
  Pattern pattern_;
  std::string content_;
};

class ByteFallback : public Decoder {
 public:
  std::vector<std::string> Apply(std::vector<std::string> tokens) const override {
    std::vector<std::string> out;
    std::string pending;  // consecutive <0xNN> bytes, decoded together
    for (const auto& t : tokens) {
      if (t.size() == 6 && t.compare(0, 3, "<0x") == 0 && t[5] == '>') {
        pending += static_cast<char>(std::stoi(t.substr(3, 2), nullptr, 16));
        continue;
      }
      if (!pending.empty()) out.push_back(std::move(pending)), pending.clear();
      out.push_back(t);
    }
    if (!pending.empty()) out.push_back(std::move(pending));
    return out;
  }
};

class Fuse : public Decoder {
 public:
  std::vector<std::string> Apply(std::vector<std::string> tokens) const override {
    std::string joined;
    for (const auto& t : tokens) joined += t;
    return {joined};
  }
};

class Strip : public Decoder {
 public:
  Strip(const nlohmann::json& config, const std::string& where)
      : content_(config.value("content", std::string(" "))),
        start_(config.value("start", 0)),
        stop_(config.value("stop", 0)) {
    // An empty content would be stripped `start` times (up to 2^31) from every token.
    if (content_.empty() || CodePointLength(content_, 0) != content_.size())
      Fail(where, "Strip decoder content must be one character");
  }
  std::vector<std::string> Apply(std::vector<std::string> tokens) const override {
    for (auto& t : tokens) {
      for (int i = 0; i < start_ && t.compare(0, content_.size(), content_) == 0; ++i)
        t.erase(0, content_.size());
      for (int i = 0; i < stop_ && t.size() >= content_.size() &&
                      t.compare(t.size() - content_.size(), content_.size(), content_) == 0;
           ++i) {
        t.erase(t.size() - content_.size());
      }
    }
    return tokens;
  }

 private:
  std::string content_;
  int start_, stop_;
};

class Metaspace : public Decoder {
 public:
  explicit Metaspace(const nlohmann::json& config)
      : replacement_(config.value("replacement", std::string("\u2581"))),
        strip_first_(config.value("prepend_scheme", std::string("always")) != "never") {}
  std::vector<std::string> Apply(std::vector<std::string> tokens) const override {
    for (std::size_t i = 0; i < tokens.size(); ++i) {
      tokens[i] = ReplaceLiteral(tokens[i], replacement_, " ");
      if (i == 0 && strip_first_ && !tokens[i].empty() && tokens[i][0] == ' ')
        tokens[i].erase(0, 1);
    }
    return tokens;
  }

 private:
  std::string replacement_;
  bool strip_first_;
};

class Sequence : public Decoder {
 public:
  explicit Sequence(std::vector<std::unique_ptr<Decoder>> steps) : steps_(std::move(steps)) {}
  std::vector<std::string> Apply(std::vector<std::string> tokens) const override {
    for (const auto& step : steps_) tokens = step->Apply(std::move(tokens));
    return tokens;
  }

 private:
  std::vector<std::unique_ptr<Decoder>> steps_;
};

}  // namespace

std::unique_ptr<Decoder> MakeDecoder(const nlohmann::json& config, const std::string& where) {
  if (config.is_null()) return nullptr;
  const std::string type = ComponentType(config, where, "decoder");
  if (type == "ByteLevel") return std::make_unique<ByteLevel>();
  if (type == "Replace") return std::make_unique<Replace>(config, where);
  if (type == "ByteFallback") return std::make_unique<ByteFallback>();
  if (type == "Fuse") return std::make_unique<Fuse>();
  if (type == "Strip") return std::make_unique<Strip>(config, where);
  if (type == "Metaspace") return std::make_unique<Metaspace>(config);
  if (type == "Sequence") {
    std::vector<std::unique_ptr<Decoder>> steps;
    for (const auto& step : RequireArray(config, "decoders", where))
      steps.push_back(MakeDecoder(RequireStep(step, where, "decoder"), where));
    return std::make_unique<Sequence>(std::move(steps));
  }
  Unsupported(where, "decoder", type);
}

}  // namespace kvfold::hf
