#include "formats/staged_folder.h"

#include <sys/stat.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <string>
#include <vector>

#include "formats/error.h"
#include "tests/test_support.h"

using namespace kvfold;
using kvfold::test::ListDir;
using kvfold::test::ReadBytes;
using kvfold::test::TempDir;
using kvfold::test::WriteBytes;

TEST_CASE("a staged folder appears whole, or not at all", "[formats][output]") {
  TempDir tmp;
  const std::string out = tmp.File("out");
  {
    StagedFolder s(out, false);
    WriteBytes(s.path() + "/a", "1");
    CHECK(ListDir(tmp.path()) == std::vector<std::string>{"out.tmp." + std::to_string(::getpid())});
  }  // not committed: gone
  CHECK(ListDir(tmp.path()).empty());
  {
    StagedFolder s(out, false);
    WriteBytes(s.path() + "/kvfold.json", "first");
    s.Commit();
  }
  CHECK(ListDir(tmp.path()) == std::vector<std::string>{"out"});
  CHECK_THROWS_WITH(StagedFolder(out, false), Catch::Contains("already exists (use --force"));
  {
    StagedFolder s(out, true);
    WriteBytes(s.path() + "/kvfold.json", "second");
    CHECK(ReadBytes(out + "/kvfold.json") == "first");  // the old output stays until the swap
    s.Commit();
  }
  CHECK(ReadBytes(out + "/kvfold.json") == "second");
  CHECK(ListDir(tmp.path()) == std::vector<std::string>{"out"});
}

TEST_CASE("--force replaces only what kvfold wrote; dead runs' staging folders are swept",
          "[formats][output]") {
  TempDir tmp;
  WriteBytes(tmp.File("data"), "user's");
  CHECK_THROWS_WITH(StagedFolder(tmp.File("data"), true), Catch::Contains("is not a folder"));
  REQUIRE(::mkdir(tmp.File("mine").c_str(), 0755) == 0);
  WriteBytes(tmp.File("mine/notes"), "user's");
  CHECK_THROWS_WITH(StagedFolder(tmp.File("mine"), true), Catch::Contains("has no kvfold.json"));
  // pid 2^22 + 1 is above Linux's pid_max ceiling: that process cannot exist.
  const std::string stale = tmp.File("out.tmp.4194305");
  REQUIRE(::mkdir(stale.c_str(), 0755) == 0);
  WriteBytes(stale + "/model.safetensors", "partial");
  const std::string alive = tmp.File("out.tmp.1");  // pid 1 runs: never touched
  REQUIRE(::mkdir(alive.c_str(), 0755) == 0);
  StagedFolder s(tmp.File("out"), false);
  CHECK(::access(stale.c_str(), F_OK) != 0);
  CHECK(::access(alive.c_str(), F_OK) == 0);
  CHECK(ReadBytes(tmp.File("mine/notes")) == "user's");
}

TEST_CASE("RemoveTree removes links, never what they point to", "[formats][output]") {
  TempDir tmp;
  REQUIRE(::mkdir(tmp.File("tree").c_str(), 0755) == 0);
  WriteBytes(tmp.File("victim"), "keep");
  REQUIRE(::symlink(tmp.File("victim").c_str(), tmp.File("tree/link").c_str()) == 0);
  REQUIRE(::symlink(tmp.path().c_str(), tmp.File("tree/dirlink").c_str()) == 0);
  CHECK(RemoveTree(tmp.File("tree")));
  CHECK(ReadBytes(tmp.File("victim")) == "keep");
  CHECK(ListDir(tmp.path()) == std::vector<std::string>{"victim"});
}
