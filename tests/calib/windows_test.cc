#include "calib/windows.h"

#include <catch2/catch.hpp>

#include "formats/error.h"

using namespace kvfold;

TEST_CASE("windows are consecutive, complete, and capped", "[windows]") {
  std::vector<std::int32_t> tokens(10);
  for (int i = 0; i < 10; ++i) tokens[i] = i;
  auto w = CutWindows(tokens, 3, -1, "t");
  REQUIRE(w.size() == 3);  // the tail token 9 is dropped
  CHECK(w[0] == TokenWindow{0, 1, 2});
  CHECK(w[2] == TokenWindow{6, 7, 8});
  CHECK(CutWindows(tokens, 3, 2, "t").size() == 2);
  CHECK_THROWS_WITH(CutWindows(tokens, 11, -1, "t"),
                    "t: text has 10 tokens, fewer than one window of 11");
  CHECK_THROWS_AS(CutWindows(tokens, 1, -1, "t"), Error);
}

TEST_CASE("the model input shifts a window right behind BOS", "[windows]") {
  std::vector<std::int32_t> out = {99};
  AppendModelInput({5, 6, 7}, 1, out);
  CHECK(out == std::vector<std::int32_t>{99, 1, 5, 6});  // appended, W ids, last token dropped
}

TEST_CASE("copy-task windows repeat a seeded random run above the control pieces", "[windows]") {
  const auto w = CopyTaskWindows(3, 16, 2048, 5);
  REQUIRE(w.size() == 3);
  for (const auto& x : w) {
    REQUIRE(x.size() == 16);
    for (int i = 0; i < 8; ++i)
      CHECK(x[static_cast<std::size_t>(i)] == x[static_cast<std::size_t>(i + 8)]);
    for (auto id : x) CHECK((id >= 259 && id < 2048));
  }
  CHECK(w[0] != w[1]);
  CHECK(CopyTaskWindows(3, 16, 2048, 5) == w);
  CHECK(CopyTaskWindows(3, 16, 2048, 6) != w);
  CHECK(CopyTaskScoredFrom(16) == 9);
  CHECK_THROWS_WITH(CopyTaskWindows(1, 15, 2048, 0), Catch::StartsWith("--copy: "));
}
