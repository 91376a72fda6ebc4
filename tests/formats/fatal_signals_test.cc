#include "formats/fatal_signals.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <string>

#include "formats/mapped_file.h"
#include "tests/test_support.h"

using namespace kvfold;
using kvfold::test::TempDir;

namespace {

struct ChildResult {
  int exit_code = -1;
  std::string err;
};

// Runs `body` in a forked child with kvfold's handlers installed; returns its exit code and stderr.
template <typename Body>
ChildResult InChild(const std::string& err_path, Body body) {
  const pid_t pid = ::fork();
  REQUIRE(pid >= 0);
  if (pid == 0) {
    const int fd = ::open(err_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    ::dup2(fd, STDERR_FILENO);
    InstallFatalSignalHandlers();
    body();
    ::_exit(0);
  }
  int status = 0;
  ::waitpid(pid, &status, 0);
  return {WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status),
          test::ReadBytes(err_path)};
}

}  // namespace

TEST_CASE("a mapped file truncated while it is read is an error naming it, not a crash",
          "[formats][signals]") {
  TempDir tmp;
  const std::string weights = tmp.File("model.safetensors");
  test::WriteBytes(weights, std::string(1 << 16, 'x'));
  const ChildResult r = InChild(tmp.File("err"), [&] {
    MappedFile f(weights);
    REQUIRE(::truncate(weights.c_str(), 0) == 0);    // another process truncates the checkpoint
    volatile std::uint8_t sink = f.data()[1 << 15];  // SIGBUS: the page is gone
    (void)sink;
  });
  CHECK(r.exit_code == 1);
  CHECK(r.err == "kvfold: error: " + weights +
                     ": changed or truncated while kvfold was reading it (SIGBUS)\n");
}

TEST_CASE("SIGTERM and SIGINT remove registered temporaries and exit 128 + signal",
          "[formats][signals]") {
  for (int sig : {SIGTERM, SIGINT}) {
    TempDir tmp;
    const std::string staging = tmp.File("out.tmp.1");
    REQUIRE(::mkdir(staging.c_str(), 0755) == 0);
    test::WriteBytes(staging + "/model.safetensors", "partial");
    test::WriteBytes(tmp.File("unrelated"), "keep");
    const ChildResult r = InChild(tmp.File("err"), [&] {
      RemoveOnFatalSignal cleanup(staging);
      ::raise(sig);
    });
    CHECK(r.exit_code == 128 + sig);
    CHECK(r.err.find("partial output removed") != std::string::npos);
    CHECK(::access(staging.c_str(), F_OK) != 0);
    CHECK(test::ReadBytes(tmp.File("unrelated")) == "keep");
  }
}
