// ReadJsonFile and CheckJsonDepth: nesting is bounded before a file is parsed.
#include "formats/json_file.h"

#include <catch2/catch.hpp>

#include "formats/error.h"
#include "tests/test_support.h"

using namespace kvfold;

namespace {

std::string Nested(int depth, const std::string& inner = "1") {
  return std::string(static_cast<std::size_t>(depth), '[') + inner +
         std::string(static_cast<std::size_t>(depth), ']');
}

}  // namespace

TEST_CASE("JSON nesting is bounded by a byte scan before parsing", "[json]") {
  CHECK_NOTHROW(CheckJsonDepth(Nested(kMaxJsonDepth), "f.json"));
  CHECK_THROWS_WITH(CheckJsonDepth(Nested(kMaxJsonDepth + 1), "f.json"),
                    "f.json: JSON nested deeper than 512 levels (at byte 512)");
  // Objects count as arrays do; closing brackets give the depth back.
  CHECK_THROWS_WITH(CheckJsonDepth(std::string(600, '{'), "f.json"),
                    Catch::StartsWith("f.json: JSON nested deeper than 512 levels"));
  CHECK_NOTHROW(CheckJsonDepth(Nested(500) + Nested(500) + Nested(500), "f.json"));
  // Brackets inside strings, escaped quotes included, are not nesting.
  const std::string brackets =
      "\"" + std::string(1000, '[') + "\\\"" + std::string(1000, '{') + "\\\\\"";
  CHECK_NOTHROW(CheckJsonDepth("[" + brackets + "]", "f.json"));
}

TEST_CASE("ReadJsonFile refuses a file nested 100000 deep by name", "[json]") {
  test::TempDir dir;
  const std::string file = dir.File("config.json");
  test::WriteBytes(file, "{\"x\": " + Nested(100000) + "}");
  CHECK_THROWS_WITH(ReadJsonFile(file),
                    file + ": JSON nested deeper than 512 levels (at byte 517)");
  test::WriteBytes(file, "{\"x\": " + Nested(500) + "}");
  CHECK(ReadJsonFile(file)["x"].is_array());
}
