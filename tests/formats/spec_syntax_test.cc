#include "formats/spec_syntax.h"

#include <catch2/catch.hpp>

#include "formats/error.h"

using namespace kvfold;

TEST_CASE("spec parameters: lists continue the previous key, mistakes are refused", "[spec]") {
  const SpecParams p = ParseSpecParams(" kv-heads = 2 ,protect=0, 1,rope=commute", "--passes: x");
  REQUIRE(p.size() == 3);
  CHECK(p[0] == std::make_pair(std::string("kv-heads"), std::string("2")));
  CHECK(p[1] == std::make_pair(std::string("protect"), std::string("0,1")));
  CHECK(p[2] == std::make_pair(std::string("rope"), std::string("commute")));
  CHECK_THROWS_WITH(ParseSpecParams("a=1,", "w"), "w: empty parameter in '<a=1,>'");
  CHECK_THROWS_WITH(ParseSpecParams("", "w"), Catch::Contains("empty parameter"));
  CHECK_THROWS_WITH(ParseSpecParams("a=1,,2", "w"), Catch::Contains("empty parameter"));
  CHECK_THROWS_WITH(ParseSpecParams("a", "w"), "w: parameter 'a' needs a value (key=value)");
  CHECK_THROWS_WITH(ParseSpecParams("=1", "w"), Catch::Contains("needs a key"));
  CHECK_THROWS_WITH(ParseSpecParams("a=1,a=2", "w"), "w: parameter 'a' given twice");
  CHECK(SplitSpecList("0,,1") == std::vector<std::string>{"0", "", "1"});
}

TEST_CASE("numbers are printed as given, in their shortest exact form", "[spec]") {
  CHECK(FormatNumber(0.5) == "0.5");
  CHECK(FormatNumber(1e-9) == "1e-09");  // once "0.000000" (--kv-budget 1e-9)
  CHECK(FormatNumber(0.0625) == "0.0625");
  CHECK(FormatNumber(0.1) == "0.1");
  CHECK(FormatNumber(1.0 / 3) == "0.3333333333333333");
  CHECK(std::stod(FormatNumber(1.0 / 3)) == 1.0 / 3);
}
