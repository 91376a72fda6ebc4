#include "formats/staged_folder.h"

#include <fcntl.h>
#include <signal.h>
#include <stdio.h>  // renameat2 (glibc 2.28+)
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <system_error>

#include "formats/error.h"
#include "formats/fatal_signals.h"
#include "formats/owned_folder.h"

namespace kvfold {
namespace fs = std::filesystem;
namespace {

// OUT.tmp.<pid> of a process that no longer runs: what a SIGKILL leaves behind. Only a folder
// that carries kvfold's staging marker naming that process, and holds nothing but files kvfold
// writes, is removed: a user's own `OUT.tmp.2024` is left alone (formats/owned_folder.h).
void RemoveStaleStaging(const fs::path& final_path) {
  const fs::path parent = final_path.has_parent_path() ? final_path.parent_path() : fs::path(".");
  const std::string prefix = final_path.filename().string() + ".tmp.";
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator(parent, ec)) {
    const std::string name = entry.path().filename().string();
    if (name.compare(0, prefix.size(), prefix) != 0) continue;
    const std::string pid = name.substr(prefix.size());
    if (pid.empty() || pid.size() > 9 || pid.find_first_not_of("0123456789") != std::string::npos)
      continue;
    const long owner = MarkedOwner(entry.path().string(), MarkerKind::kStaging);
    if (owner == std::stol(pid) && ProcessIsGone(owner)) {
      std::fprintf(stderr, "kvfold: removing %s, left by an interrupted run\n",
                   entry.path().c_str());
      RemoveTree(entry.path().string());
    }
  }
}

void CheckReplaceable(const std::string& path, bool replace) {
  struct stat st {};
  if (::lstat(path.c_str(), &st) != 0) return;  // new
  if (!replace) Fail(path, "already exists (use --force to replace it)");
  if (!S_ISDIR(st.st_mode))
    Fail(path, "exists and is not a folder; --force only replaces a folder kvfold wrote");
  std::error_code ec;
  if (fs::is_empty(path, ec)) return;
  const std::string why = NotKvfoldOutput(path);
  if (!why.empty()) {
    Fail(path,
         "exists and " + why + "; --force only replaces a folder kvfold wrote (or an empty one)");
  }
}

// Puts the staging folder at `final_path`; returns where the previous folder now is. Filesystems
// without RENAME_EXCHANGE get two renames: a kill between them leaves the previous folder at
// OUT.old.<pid>, never deleted.
std::string SwapIntoPlace(const std::string& staging, const std::string& final_path) {
  if (::renameat2(AT_FDCWD, staging.c_str(), AT_FDCWD, final_path.c_str(), RENAME_EXCHANGE) == 0)
    return staging;
  if (errno != EINVAL && errno != ENOSYS) {
    Fail(final_path, std::string("cannot swap the new output into place: ") + std::strerror(errno));
  }
  const std::string old = final_path + ".old." + std::to_string(::getpid());
  if (::rename(final_path.c_str(), old.c_str()) != 0) {
    Fail(final_path, std::string("cannot move the previous folder aside: ") + std::strerror(errno));
  }
  if (::rename(staging.c_str(), final_path.c_str()) != 0) {
    const int err = errno;
    ::rename(old.c_str(), final_path.c_str());  // put the previous folder back
    Fail(final_path, std::string("cannot move the output into place: ") + std::strerror(err));
  }
  return old;
}

}  // namespace

bool RemoveTree(const std::string& path) {
  std::error_code ec;
  fs::remove_all(path, ec);  // removes symbolic links themselves, never what they point to
  if (ec)
    std::fprintf(stderr, "kvfold: warning: could not remove %s: %s\n", path.c_str(),
                 ec.message().c_str());
  return !ec;
}

void SyncPath(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0 || ::fsync(fd) != 0) {
    const int err = errno;
    if (fd >= 0) ::close(fd);
    Fail(path, std::string("cannot sync to disk: ") + std::strerror(err));
  }
  ::close(fd);
}

StagedFolder::StagedFolder(std::string final_path, bool replace) : final_(std::move(final_path)) {
  while (final_.size() > 1 && final_.back() == '/') final_.pop_back();
  CheckReplaceable(final_, replace);
  RemoveStaleStaging(fs::path(final_));
  staging_ = final_ + ".tmp." + std::to_string(::getpid());
  if (::mkdir(staging_.c_str(), 0755) != 0) {
    Fail(final_, std::string("cannot create the output folder: ") + std::strerror(errno));
  }
  cleanup_ = std::make_unique<RemoveOnFatalSignal>(staging_);
  WriteMarker(staging_, MarkerKind::kStaging);
}

StagedFolder::~StagedFolder() {
  if (!committed_) RemoveTree(staging_);
}

void StagedFolder::Commit() {
  for (const auto& entry : fs::directory_iterator(staging_)) SyncPath(entry.path().string());
  SyncPath(staging_);
  struct stat st {};
  const bool replacing = ::lstat(final_.c_str(), &st) == 0;
  std::string previous;
  if (replacing) {
    // The folder being replaced (checked to be kvfold's) takes the staging marker with it to
    // the staging name, so a kill before it is deleted leaves it to the next run's sweep.
    WriteMarker(final_, MarkerKind::kStaging);
    try {
      previous = SwapIntoPlace(staging_, final_);
    } catch (...) {
      RemoveMarker(final_, MarkerKind::kStaging);
      throw;
    }
  } else if (::renameat2(AT_FDCWD, staging_.c_str(), AT_FDCWD, final_.c_str(), RENAME_NOREPLACE) !=
                 0 &&
             (errno != EINVAL || ::rename(staging_.c_str(), final_.c_str()) != 0)) {
    Fail(final_, std::string("cannot move the output into place: ") + std::strerror(errno));
  }
  committed_ = true;
  const fs::path parent =
      fs::path(final_).has_parent_path() ? fs::path(final_).parent_path() : fs::path(".");
  SyncPath(parent.string());
  // The previous folder now sits at the staging name: a kill from here on leaves it to the
  // next run's stale-staging sweep, never at OUT.
  RemoveMarker(final_, MarkerKind::kStaging);
  if (replacing) RemoveTree(previous);
  cleanup_.reset();
}

}  // namespace kvfold
