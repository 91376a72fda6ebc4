#include "formats/companion_files.h"

#include <algorithm>
#include <cctype>
#include <cstdio>
#include <filesystem>
#include <system_error>

#include "formats/atomic_file.h"
#include "formats/error.h"
#include "formats/mapped_file.h"

namespace kvfold {
namespace fs = std::filesystem;
namespace {

// The HF names of tokenizer, generation and chat-template files (transformers' save_pretrained).
const char* const kCompanionNames[] = {
    "tokenizer.model",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "vocab.json",
    "merges.txt",
    "generation_config.json",
    "chat_template.json",
    "chat_template.jinja",
};

std::string Upper(std::string s) {
  for (char& c : s) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  return s;
}

// README, LICENSE, NOTICE and USE_POLICY in any case, with or without a text extension.
bool IsDocument(const std::string& name) {
  const std::string stem = Upper(name.substr(0, name.find('.')));
  const std::string ext =
      name.find('.') == std::string::npos ? "" : Upper(name.substr(name.find('.')));
  const bool doc =
      stem == "README" || stem == "LICENSE" || stem == "NOTICE" || stem == "USE_POLICY";
  return doc && (ext.empty() || ext == ".MD" || ext == ".TXT");
}

}  // namespace

bool IsCompanionName(const std::string& name) {
  return std::find(std::begin(kCompanionNames), std::end(kCompanionNames), name) !=
             std::end(kCompanionNames) ||
         IsDocument(name);
}

namespace {

// What the conversion writes anew: the config and the safetensors weights.
bool IsRewritten(const std::string& name) {
  const std::string ext = ".safetensors";
  const bool safetensors =
      name.size() > ext.size() && name.compare(name.size() - ext.size(), ext.size(), ext) == 0;
  return name == "config.json" || name == "model.safetensors.index.json" || safetensors;
}

// A link may point into the model folder itself, or, in a HuggingFace hub cache snapshot
// (models--org--name/snapshots/<rev>/file -> ../../blobs/<hash>), into that repository's blobs.
bool IsOwnLinkTarget(const fs::path& target, const fs::path& dir) {
  const fs::path parent = target.parent_path();
  return parent == dir || parent == dir.parent_path().parent_path() / "blobs";
}

// Why `entry` is not copied, or "" when it is.
std::string SkipReason(const fs::directory_entry& entry, const fs::path& dir) {
  const std::string name = entry.path().filename().string();
  std::error_code ec;
  if (entry.is_directory(ec)) return "a folder";
  if (!IsCompanionName(name)) return "not part of the converted model";
  return OwnFileProblem(dir.string(), name);
}

}  // namespace

std::string OwnFileProblem(const std::string& dir, const std::string& name) {
  const fs::directory_entry entry(fs::path(dir) / name);
  std::error_code ec;
  if (entry.is_directory(ec)) return "a folder";
  if (entry.is_symlink(ec)) {
    const fs::path target = fs::canonical(entry.path(), ec);
    if (ec) return "a broken symbolic link";
    if (!IsOwnLinkTarget(target, fs::canonical(dir, ec)))
      return "a symbolic link leading out of the model folder";
  }
  if (!entry.is_regular_file(ec)) return "not a regular file";
  return "";
}

CompanionFiles FindCompanionFiles(const std::string& dir) {
  CompanionFiles out;
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator(dir, ec)) {
    const std::string name = entry.path().filename().string();
    if (name.empty() || name[0] == '.') continue;
    if (IsRewritten(name)) continue;
    const std::string why = SkipReason(entry, dir);
    if (why.empty()) {
      out.copy.push_back(name);
    } else {
      out.skipped.push_back(name + " (" + why + ")");
    }
  }
  if (ec) Fail(dir, "cannot list the model folder: " + ec.message());
  std::sort(out.copy.begin(), out.copy.end());
  std::sort(out.skipped.begin(), out.skipped.end());
  return out;
}

void CopyRegularFile(const std::string& from, const std::string& to) {
  const MappedFile source(from);  // refuses anything but a regular file
  AtomicFile out(to);
  constexpr std::size_t kBlock = 1 << 20;
  for (std::size_t at = 0; at < source.size(); at += kBlock) {
    out.Write(source.data() + at, std::min(kBlock, source.size() - at));
  }
  out.Commit();
}

}  // namespace kvfold
