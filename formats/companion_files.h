// The files around the weights that belong to a converted model: tokenizer files, generation and
// chat-template configs, README/LICENSE. Weights (safetensors, stale pytorch_model-*.bin shards and
// their indexes), kvfold's own outputs, folders, and anything that is not a regular file inside
// the model folder (a symbolic link leading out of it, a FIFO, a device) never travel.
#pragma once

#include <string>
#include <vector>

namespace kvfold {

struct CompanionFiles {
  std::vector<std::string> copy;     // names in `dir`, sorted
  std::vector<std::string> skipped;  // "name (why)", sorted, for a note to the user
};

CompanionFiles FindCompanionFiles(const std::string& dir);

// Whether `name` is one of the companion files' names (tokenizer, generation and chat-template
// files, README/LICENSE/NOTICE/USE_POLICY).
bool IsCompanionName(const std::string& name);

// Why `dir`/`name` is not a file of the model folder's own ("a folder", "a broken symbolic link",
// "a symbolic link leading out of the model folder", "not a regular file"), or "" when it is one.
// The rule companion files are copied by, and tokenizer files read by.
std::string OwnFileProblem(const std::string& dir, const std::string& name);

// Copies the regular file `from` to `to` (atomically, streamed in blocks).
void CopyRegularFile(const std::string& from, const std::string& to);

}  // namespace kvfold
