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

namespace {
// A kvfold.json as kvfold writes it (the fields --force looks for), with `tag` to tell two apart.
std::string KvfoldJson(const std::string& tag) {
  return R"({"format_version": 1, "kvfold_version": ")" + tag +
         R"(", "pipeline": "gqa-svd", "source": {}, "calibration": {}})";
}
std::string Marker(long pid) { return "kvfold staging folder\npid " + std::to_string(pid) + "\n"; }
}  // namespace

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
    WriteBytes(s.path() + "/kvfold.json", KvfoldJson("first"));
    s.Commit();
  }
  CHECK(ListDir(tmp.path()) == std::vector<std::string>{"out"});
  CHECK_THROWS_WITH(StagedFolder(out, false), Catch::Contains("already exists (use --force"));
  {
    StagedFolder s(out, true);
    WriteBytes(s.path() + "/kvfold.json", KvfoldJson("second"));
    CHECK(ReadBytes(out + "/kvfold.json") ==
          KvfoldJson("first"));  // the old output stays until the swap
    s.Commit();
  }
  CHECK(ReadBytes(out + "/kvfold.json") == KvfoldJson("second"));
  CHECK(ListDir(tmp.path()) == std::vector<std::string>{"out"});
  CHECK(ListDir(out) == std::vector<std::string>{"kvfold.json"});  // no marker left in OUT
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
  WriteBytes(stale + "/.kvfold-staging", Marker(4194305));
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

TEST_CASE("a folder named like a staging folder is kvfold's only with its marker and contents",
          "[formats][output][hostile]") {
  TempDir tmp;
  // A user's folder with a staging-like name: no marker, or a marker naming another process,
  // or kvfold's marker beside a file kvfold never writes.
  const std::string notes = tmp.File("llama.tmp.4194305");
  REQUIRE(::mkdir(notes.c_str(), 0755) == 0);
  WriteBytes(notes + "/notes.txt", "user's");
  const std::string other_pid = tmp.File("llama.tmp.4194306");
  REQUIRE(::mkdir(other_pid.c_str(), 0755) == 0);
  WriteBytes(other_pid + "/.kvfold-staging", Marker(4194305));
  const std::string mixed = tmp.File("llama.tmp.4194307");
  REQUIRE(::mkdir(mixed.c_str(), 0755) == 0);
  WriteBytes(mixed + "/.kvfold-staging", Marker(4194307));
  WriteBytes(mixed + "/diary.md", "user's");
  const std::string empty_marker = tmp.File("llama.tmp.4194308");
  REQUIRE(::mkdir(empty_marker.c_str(), 0755) == 0);
  WriteBytes(empty_marker + "/.kvfold-staging", "");
  { StagedFolder s(tmp.File("llama"), false); }
  CHECK(ReadBytes(notes + "/notes.txt") == "user's");
  CHECK(::access(other_pid.c_str(), F_OK) == 0);
  CHECK(ReadBytes(mixed + "/diary.md") == "user's");
  CHECK(::access(empty_marker.c_str(), F_OK) == 0);
}

TEST_CASE("--force needs kvfold's own kvfold.json and nothing foreign beside it",
          "[formats][output][hostile]") {
  TempDir tmp;
  const auto folder_with = [&](const std::string& name, const std::string& kvfold_json) {
    REQUIRE(::mkdir(tmp.File(name).c_str(), 0755) == 0);
    WriteBytes(tmp.File(name + "/notes"), "user's");
    if (!kvfold_json.empty()) WriteBytes(tmp.File(name + "/kvfold.json"), kvfold_json);
    return tmp.File(name);
  };
  CHECK_THROWS_WITH(StagedFolder(folder_with("empty", " "), true),
                    Catch::Contains("its kvfold.json is not one kvfold wrote"));
  CHECK_THROWS_WITH(StagedFolder(folder_with("version", R"({"format_version": 9})"), true),
                    Catch::Contains("its kvfold.json is not one kvfold wrote"));
  const std::string dir = folder_with("dir", "");
  REQUIRE(::mkdir((dir + "/kvfold.json").c_str(), 0755) == 0);
  CHECK_THROWS_WITH(StagedFolder(dir, true),
                    Catch::Contains("its kvfold.json is not a regular file"));
  CHECK_THROWS_WITH(StagedFolder(folder_with("foreign", KvfoldJson("x")), true),
                    Catch::Contains("it holds notes is not a file kvfold writes"));
  for (const char* name : {"empty", "version", "dir", "foreign"}) {
    CHECK(ReadBytes(tmp.File(std::string(name) + "/notes")) == "user's");
  }
  // kvfold's own files, its report pair and tokenizer companions are replaceable.
  const std::string ours = tmp.File("ours");
  REQUIRE(::mkdir(ours.c_str(), 0755) == 0);
  for (const char* name : {"config.json", "model-00001-of-00002.safetensors", "tokenizer.json",
                           "LICENSE", "report.html", "report.json", "kv_mixed_precision.json"}) {
    WriteBytes(ours + "/" + name, "x");
  }
  WriteBytes(ours + "/kvfold.json", KvfoldJson("x"));
  CHECK_NOTHROW(StagedFolder(ours, true));
  WriteBytes(ours + "/page.html", "a lone page is not a report");
  CHECK_THROWS_WITH(StagedFolder(ours, true),
                    Catch::Contains("page.html is not a file kvfold writes"));
}
