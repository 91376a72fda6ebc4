// StagedFolder: an output folder built next to its final path and moved into place whole, so
// that nothing is visible at the final path until it is complete, and an existing folder that
// is being replaced (--force) survives every failure, interruption and kill.
//
//   OUT.tmp.<pid>   the staging folder: created up front (so an unwritable OUT fails before
//                   any work), removed on failure, SIGINT or SIGTERM, and by the next run if
//                   the process was killed outright.
//   Commit():       every file and the folder are fsynced, then the staging folder is swapped
//                   with OUT in one renameat2(RENAME_EXCHANGE) (or renamed when OUT is new);
//                   the previous OUT, now at OUT.tmp.<pid>, is deleted last.
#pragma once

#include <memory>
#include <string>

namespace kvfold {

class RemoveOnFatalSignal;

class StagedFolder {
 public:
  // Refuses (Error naming `final_path`) an existing `final_path` unless `replace`, and then
  // anything but a folder kvfold wrote (one with kvfold.json) or an empty folder. Removes
  // staging folders of `final_path` left by processes that no longer run, then creates ours.
  StagedFolder(std::string final_path, bool replace);
  ~StagedFolder();  // removes the staging folder unless committed
  StagedFolder(const StagedFolder&) = delete;
  StagedFolder& operator=(const StagedFolder&) = delete;

  const std::string& path() const { return staging_; }  // where to write
  const std::string& final_path() const { return final_; }
  void Commit();

 private:
  std::string final_;
  std::string staging_;
  bool committed_ = false;
  std::unique_ptr<RemoveOnFatalSignal> cleanup_;
};

// Removes `path` and everything below it, never following symbolic links; no shell is involved.
// Returns false (and leaves a warning on stderr) if something could not be removed.
bool RemoveTree(const std::string& path);

// fsyncs the file or folder at `path`; throws Error naming it on failure.
void SyncPath(const std::string& path);

}  // namespace kvfold
