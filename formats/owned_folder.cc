#include "formats/owned_folder.h"

#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <system_error>

#include "formats/atomic_file.h"
#include "formats/companion_files.h"
#include "formats/error.h"
#include "formats/json_file.h"
#include "formats/mapped_file.h"

namespace kvfold {
namespace fs = std::filesystem;
namespace {

std::string MarkerText(MarkerKind kind, long pid) {
  const char* what =
      kind == MarkerKind::kStaging ? "kvfold staging folder" : "kvfold plan scratch folder";
  return std::string(what) + "\npid " + std::to_string(pid) + "\n";
}

bool EndsWith(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() &&
         s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

bool AllDigits(const std::string& s) {
  return !s.empty() && s.size() <= 18 && s.find_first_not_of("0123456789") == std::string::npos;
}

// `name` without an atomic writer's `.tmp.<pid>.<n>` suffix (formats/atomic_file.h).
std::string WithoutTemporarySuffix(const std::string& name) {
  const std::size_t n_dot = name.rfind('.');
  if (n_dot == std::string::npos || !AllDigits(name.substr(n_dot + 1))) return name;
  const std::size_t pid_dot = name.rfind('.', n_dot - 1);
  if (pid_dot == std::string::npos || !AllDigits(name.substr(pid_dot + 1, n_dot - pid_dot - 1)))
    return name;
  const std::string stem = name.substr(0, pid_dot);
  return EndsWith(stem, ".tmp") ? stem.substr(0, stem.size() - 4) : name;
}

// The names kvfold writes into an output folder (docs/formats.md, "Output folder").
bool IsOutputName(const std::string& name, const fs::path& dir) {
  static const char* const kFixed[] = {"kvfold.json",
                                       "config.json",
                                       "configuration_decilm.py",
                                       "model.safetensors.index.json",
                                       "kv_eviction_policy.json",
                                       "kv_eviction_policy.safetensors",
                                       "kv_mixed_precision.json",
                                       "kv_mixed_precision.safetensors"};
  for (const char* fixed : kFixed) {
    if (name == fixed) return true;
  }
  if (name.rfind("model", 0) == 0 && EndsWith(name, ".safetensors")) return true;
  // --report OUT/NAME.html writes NAME.html and NAME.json: a pair, never one alone.
  std::error_code ec;
  if (EndsWith(name, ".html")) {
    return fs::is_regular_file(dir / (name.substr(0, name.size() - 5) + ".json"), ec);
  }
  if (EndsWith(name, ".json") &&
      fs::is_regular_file(dir / (name.substr(0, name.size() - 5) + ".html"), ec)) {
    return true;
  }
  return IsCompanionName(name) || name == MarkerName(MarkerKind::kStaging);
}

// Why an entry of `dir` is not something kvfold writes into an output folder, or "".
std::string ForeignEntry(const fs::directory_entry& entry, const fs::path& dir) {
  const std::string name = entry.path().filename().string();
  struct stat st {};
  if (::lstat(entry.path().c_str(), &st) != 0) return name + " cannot be examined";
  if (!S_ISREG(st.st_mode)) return name + " is not a regular file";
  if (!IsOutputName(WithoutTemporarySuffix(name), dir))
    return name + " is not a file kvfold writes";
  return "";
}

// Why the kvfold.json in `folder` is not kvfold's own (format_version 1), or "".
std::string NotKvfoldJson(const fs::path& file) {
  struct stat st {};
  if (::lstat(file.c_str(), &st) != 0) return "has no kvfold.json";
  if (!S_ISREG(st.st_mode)) return "its kvfold.json is not a regular file";
  if (st.st_size > (64 << 20)) return "its kvfold.json is larger than kvfold writes";
  nlohmann::json doc;
  try {
    doc = ReadJsonFile(file.string());  // depth-checked, parsed, or an Error
  } catch (const Error&) {  // unreadable, not JSON or nested too deep: not kvfold's, as below
  }
  const bool ours =
      doc.is_object() && doc.contains("format_version") && doc["format_version"] == 1 &&
      doc.contains("kvfold_version") && doc["kvfold_version"].is_string() &&
      doc.contains("pipeline") && doc["pipeline"].is_string() && doc.contains("source") &&
      doc["source"].is_object() && doc.contains("calibration") && doc["calibration"].is_object();
  return ours ? ""
              : "its kvfold.json is not one kvfold wrote (format_version 1 with pipeline, source, "
                "calibration)";
}

long ReadMarkerPid(const fs::path& folder, MarkerKind kind) {
  const fs::path file = folder / MarkerName(kind);
  struct stat st {};
  if (::lstat(file.c_str(), &st) != 0 || !S_ISREG(st.st_mode) || st.st_size > 64) return 0;
  std::string text;
  try {
    text = ReadFileToString(file.string());
  } catch (const Error&) {
    return 0;
  }
  const std::size_t at = text.find("\npid ");
  if (at == std::string::npos || !EndsWith(text, "\n")) return 0;
  const std::string pid = text.substr(at + 5, text.size() - at - 6);
  if (!AllDigits(pid) || pid.size() > 9) return 0;
  const long value = std::stol(pid);
  return text == MarkerText(kind, value) ? value : 0;
}

// A scratch folder holds candidate conversions: complete outputs or their staging folders.
bool HoldsOnlyCandidates(const fs::path& folder) {
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator(folder, ec)) {
    const std::string name = entry.path().filename().string();
    if (name == MarkerName(MarkerKind::kScratch)) continue;
    struct stat st {};
    if (::lstat(entry.path().c_str(), &st) != 0 || !S_ISDIR(st.st_mode)) return false;
    if (!NotKvfoldOutput(entry.path().string()).empty() &&
        MarkedOwner(entry.path().string(), MarkerKind::kStaging) == 0) {
      return false;
    }
  }
  return !ec;
}

// Why `dir` holds something kvfold does not write into an output folder ("it holds ..."), or "".
std::string FirstForeignEntry(const fs::path& dir) {
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator(dir, ec)) {
    const std::string why = ForeignEntry(entry, dir);
    if (!why.empty()) return "it holds " + why;
  }
  return ec ? "it cannot be listed: " + ec.message() : "";
}

}  // namespace

const char* MarkerName(MarkerKind kind) {
  return kind == MarkerKind::kStaging ? ".kvfold-staging" : ".kvfold-scratch";
}

void WriteMarker(const std::string& folder, MarkerKind kind) {
  WriteFileAtomically(folder + "/" + MarkerName(kind), MarkerText(kind, ::getpid()));
}

void RemoveMarker(const std::string& folder, MarkerKind kind) {
  ::unlink((folder + "/" + MarkerName(kind)).c_str());
}

std::string NotKvfoldOutput(const std::string& folder) {
  const std::string json = NotKvfoldJson(fs::path(folder) / "kvfold.json");
  return json.empty() ? FirstForeignEntry(folder) : json;
}

long MarkedOwner(const std::string& folder, MarkerKind kind) {
  struct stat st {};
  if (::lstat(folder.c_str(), &st) != 0 || !S_ISDIR(st.st_mode) || st.st_uid != ::geteuid())
    return 0;
  const long pid = ReadMarkerPid(folder, kind);
  if (pid == 0) return 0;
  const bool contents_ours = kind == MarkerKind::kStaging ? FirstForeignEntry(folder).empty()
                                                          : HoldsOnlyCandidates(folder);
  return contents_ours ? pid : 0;
}

bool ProcessIsGone(long pid) {
  return pid > 0 && ::kill(static_cast<pid_t>(pid), 0) != 0 && errno == ESRCH;
}

}  // namespace kvfold
