#include "tests/test_support.h"

#include <dirent.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <catch2/catch.hpp>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <sstream>

namespace kvfold::test {

std::string SharedPath(const std::string& relative) {
  const char* env = std::getenv("KVFOLD_SHARED");
  const std::string root = env ? env : KVFOLD_SHARED_DIR;
  struct stat st {};
  if (::stat(root.c_str(), &st) != 0) {
    FAIL("shared data folder not found at " << root << " (set KVFOLD_SHARED)");
  }
  return root + "/" + relative;
}

TempDir::TempDir() {
  const char* base = std::getenv("TMPDIR");
  std::string tmpl = std::string(base ? base : "/tmp") + "/kvfold-test-XXXXXX";
  std::vector<char> buf(tmpl.begin(), tmpl.end());
  buf.push_back('\0');
  if (::mkdtemp(buf.data()) == nullptr) FAIL("mkdtemp failed");
  path_ = buf.data();
}

TempDir::~TempDir() {
  const std::string cmd = "rm -rf '" + path_ + "'";
  if (std::system(cmd.c_str()) != 0) std::fprintf(stderr, "could not remove %s\n", path_.c_str());
}

void WriteBytes(const std::string& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  REQUIRE(out.good());
}

std::string ReadBytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

std::vector<std::string> ListDir(const std::string& dir) {
  std::vector<std::string> names;
  if (DIR* d = ::opendir(dir.c_str())) {
    while (dirent* e = ::readdir(d)) {
      std::string n = e->d_name;
      if (n != "." && n != "..") names.push_back(n);
    }
    ::closedir(d);
  }
  std::sort(names.begin(), names.end());
  return names;
}

CommandResult RunKvfold(const std::string& args) {
  TempDir tmp;
  const std::string out = tmp.File("out"), err = tmp.File("err");
  // Without a core named by the caller, kvfold runs the OpenBLAS kernels of the test process
  // that compares its numbers: where Debian's OpenBLAS falls back to Prescott (an AVX-512 CPU it
  // does not know), kvfold alone would run SkylakeX kernels (runtime_check/blas_core.h), and
  // its floats would differ in the 8th digit from the test's.
  const char* core = std::getenv("OPENBLAS_CORETYPE");
  const std::string env = core != nullptr ? "" : "KVFOLD_BLAS_REEXEC=1 ";
  const std::string cmd = env + KVFOLD_BIN + " " + args + " >" + out + " 2>" + err;
  const int status = std::system(cmd.c_str());
  CommandResult r;
  r.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  r.out = ReadBytes(out);
  r.err = ReadBytes(err);
  return r;
}

std::string SafetensorsBytes(const std::string& header_json, const std::string& data) {
  std::string bytes(8, '\0');
  const std::uint64_t n = header_json.size();
  for (int i = 0; i < 8; ++i) bytes[i] = static_cast<char>((n >> (8 * i)) & 0xff);
  return bytes + header_json + data;
}

std::string NpyBytes(const std::string& descr, const std::string& shape, const std::string& data,
                     bool fortran) {
  std::string header = "{'descr': '" + descr +
                       "', 'fortran_order': " + (fortran ? "True" : "False") +
                       ", 'shape': " + shape + ", }";
  while ((10 + header.size() + 1) % 64 != 0) header += ' ';
  header += '\n';
  std::string out = std::string("\x93NUMPY", 6) + '\x01' + '\x00';
  out += static_cast<char>(header.size() & 0xff);
  out += static_cast<char>(header.size() >> 8);
  return out + header + data;
}

std::int64_t DeltaRank(const std::vector<float>& after, const std::vector<float>& before,
                       std::int64_t cols, double tolerance) {
  const std::int64_t rows = static_cast<std::int64_t>(after.size()) / cols;
  std::vector<std::vector<double>> basis;
  double largest = 0;
  for (std::int64_t r = 0; r < rows; ++r) {
    double norm = 0;
    for (std::int64_t c = 0; c < cols; ++c)
      norm += std::pow(after[r * cols + c] - before[r * cols + c], 2);
    largest = std::max(largest, std::sqrt(norm));
  }
  for (std::int64_t r = 0; r < rows; ++r) {
    std::vector<double> v(static_cast<std::size_t>(cols));
    for (std::int64_t c = 0; c < cols; ++c)
      v[c] = double(after[r * cols + c]) - before[r * cols + c];
    for (const auto& b : basis) {
      double dot = 0;
      for (std::int64_t c = 0; c < cols; ++c) dot += v[c] * b[c];
      for (std::int64_t c = 0; c < cols; ++c) v[c] -= dot * b[c];
    }
    double norm = 0;
    for (double e : v) norm += e * e;
    norm = std::sqrt(norm);
    if (norm <= tolerance * largest) continue;
    for (double& e : v) e /= norm;
    basis.push_back(v);
  }
  return static_cast<std::int64_t>(basis.size());
}

}  // namespace kvfold::test
