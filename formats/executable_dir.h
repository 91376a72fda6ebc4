// The folder of the running executable (/proc/self/exe with symlinks resolved), where kvfold
// finds what was built or installed beside it: the kvfold command its kvfold-core
// (tools/kvfold_launcher.cc), kvfold-core its sentencepiece shim. Header-only, so that the
// launcher, which links no kvfold library but blas_core, can use it.
#pragma once

#include <unistd.h>

#include <climits>
#include <string>

namespace kvfold {

// "." when the link cannot be read.
inline std::string ExecutableDir() {
  char buf[PATH_MAX];
  const ssize_t n = ::readlink("/proc/self/exe", buf, sizeof buf - 1);
  if (n <= 0) return ".";
  const std::string path(buf, static_cast<std::size_t>(n));
  return path.substr(0, path.find_last_of('/'));
}

}  // namespace kvfold
