#include "formats/progress.h"

#include <catch2/catch.hpp>

using namespace kvfold;

TEST_CASE("progress lines estimate the time left from the rate so far", "[progress]") {
  // 3 of 22 layers in 12 s: 19 more at 4 s each.
  CHECK(TimeLeftText(12.0, 3, 22) == "about 1m16s left");
  CHECK(TimeLeftText(10.0, 1, 2) == "about 10s left");
  CHECK(TimeLeftText(3600.0, 1, 3) == "about 2h00m left");
  CHECK(TimeLeftText(0.4, 1, 2) == "about 0s left");
  // Nothing to estimate from before the first step, nothing left after the last.
  CHECK(TimeLeftText(5.0, 0, 10).empty());
  CHECK(TimeLeftText(5.0, 10, 10).empty());
  CHECK(TimeLeftText(5.0, 12, 10).empty());
}
