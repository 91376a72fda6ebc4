// Helpers shared by kvfold's tests: paths into ../shared, scratch folders, running the CLI.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace kvfold::test {

// Absolute path of `relative` inside the shared data folder (KVFOLD_SHARED overrides the
// configured one). Fails the test when the folder is missing: tests never skip silently.
std::string SharedPath(const std::string& relative);

// A fresh directory under $TMPDIR, removed with its contents on destruction.
class TempDir {
 public:
  TempDir();
  ~TempDir();
  const std::string& path() const { return path_; }
  std::string File(const std::string& name) const { return path_ + "/" + name; }

 private:
  std::string path_;
};

void WriteBytes(const std::string& path, const std::string& bytes);
std::string ReadBytes(const std::string& path);
std::vector<std::string> ListDir(const std::string& dir);

struct CommandResult {
  int exit_code = -1;
  std::string out;  // stdout
  std::string err;  // stderr
};
// Runs the built kvfold binary with `args` (already shell-quoted where needed).
CommandResult RunKvfold(const std::string& args);

// Builds a safetensors file image from a raw header JSON and a data area.
std::string SafetensorsBytes(const std::string& header_json, const std::string& data);

// A NumPy .npy (format 1.0) image built from NumPy's format description, not by kvfold: the
// header dict with `descr` ("<i4", ...), `fortran_order` and `shape` ("(2, 3)"), padded so the
// data starts 64-byte aligned, then `data` as given.
std::string NpyBytes(const std::string& descr, const std::string& shape, const std::string& data,
                     bool fortran = false);

template <typename T>
std::string NpyBytes(const std::string& descr, const std::string& shape,
                     const std::vector<T>& values, bool fortran = false) {
  return NpyBytes(
      descr, shape,
      std::string(reinterpret_cast<const char*>(values.data()), values.size() * sizeof(T)),
      fortran);
}

// The numerical rank of after - before ([rows, cols] row-major) in float64: rows left by
// Gram-Schmidt against the ones before them above `tolerance` times the largest row norm.
std::int64_t DeltaRank(const std::vector<float>& after, const std::vector<float>& before,
                       std::int64_t cols, double tolerance);

}  // namespace kvfold::test
