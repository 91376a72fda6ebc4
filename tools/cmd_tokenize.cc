// kvfold tokenize MODEL --text FILE [--text FILE ...] [--json]: the ids eval and convert use for a
// text, Encode of the whole file with no special tokens added, encoded as they encode it: in
// pieces on every core (calib/seam_encode.h), so that the tokenizer_js test compares those
// pieces, joined, with HF's JavaScript tokenizers on the whole file. MODEL is a folder with
// tokenizer.json or tokenizer.model (config.json and weights are not needed) or the tokenizer file
// itself. With --json each file's ids are one line {"ids": [...]}, in the order given.
#include <sys/stat.h>

#include <cstdio>
#include <string>
#include <vector>

#include "calib/text.h"
#include "calib/tokenizer.h"
#include "formats/checkpoint.h"
#include "formats/error.h"
#include "formats/ranks.h"
#include "tools/commands.h"

namespace kvfold {
namespace {

std::string TokenizerFileOf(const std::string& model) {
  struct stat st {};
  if (::stat(model.c_str(), &st) != 0) Fail(model, "no such file or folder");
  if (!S_ISDIR(st.st_mode)) return model;
  const std::string file = FindTokenizerFile(model);
  if (file.empty()) Fail(model, "no tokenizer.json or tokenizer.model in the folder");
  return file;
}

}  // namespace

Command AddTokenizeCommand(CLI::App& app) {
  struct Args {
    std::string model;
    std::vector<std::string> texts;
    bool json = false;
  };
  auto args = std::make_shared<Args>();
  CLI::App* sub =
      app.add_subcommand("tokenize", "Print the token ids eval and convert use for a text");
  sub->add_option("MODEL", args->model, "Model folder (or tokenizer.json / tokenizer.model)")
      ->required();
  sub->add_option("--text", args->texts, "UTF-8 text file (repeat for several)")->required();
  sub->add_flag("--json", args->json, "Print {\"ids\": [...]} instead of one id per line");
  return {
      sub, [args] {
        const auto tokenizer = Tokenizer::Load(TokenizerFileOf(args->model));
        std::string out;  // printed only when every text encoded: a bad file leaves stdout empty
        for (const std::string& text : args->texts) {
          const std::vector<std::int32_t> ids =
              tokenizer->EncodePrefix(LoadText(text), 0, ThreadsPerRank(0));
          if (args->json) out += "{\"ids\": [";
          for (std::size_t i = 0; i < ids.size(); ++i) {
            if (args->json)
              out += (i ? ", " : "") + std::to_string(ids[i]);
            else
              out += std::to_string(ids[i]) + "\n";
          }
          if (args->json) out += "]}\n";
        }
        std::fwrite(out.data(), 1, out.size(), stdout);
        return 0;
      }};
}

}  // namespace kvfold
