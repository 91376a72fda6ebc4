#include "calib/text.h"

#include <catch2/catch.hpp>

#include "formats/error.h"
#include "tests/test_support.h"

using namespace kvfold;
using kvfold::test::TempDir;

TEST_CASE("strict UTF-8 validation", "[text]") {
  CHECK_FALSE(FindInvalidUtf8("plain ascii").has_value());
  CHECK_FALSE(FindInvalidUtf8("caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80").has_value());
  CHECK(FindInvalidUtf8("ab\xff").value() == 2);            // never valid
  CHECK(FindInvalidUtf8("a\x80").value() == 1);             // lone continuation
  CHECK(FindInvalidUtf8("\xc0\xaf").value() == 0);          // overlong '/'
  CHECK(FindInvalidUtf8("\xe0\x80\xaf").value() == 0);      // overlong 3-byte
  CHECK(FindInvalidUtf8("xy\xed\xa0\x80").value() == 2);    // UTF-16 surrogate
  CHECK(FindInvalidUtf8("\xf4\x90\x80\x80").value() == 0);  // above U+10FFFF
  CHECK(FindInvalidUtf8("ok\xe2\x82").value() == 2);        // truncated sequence
}

TEST_CASE("LoadText names the file and the problem", "[text]") {
  TempDir dir;
  test::WriteBytes(dir.File("good.txt"), "hello\n");
  CHECK(LoadText(dir.File("good.txt")) == "hello\n");

  test::WriteBytes(dir.File("empty.txt"), "");
  CHECK_THROWS_WITH(LoadText(dir.File("empty.txt")),
                    dir.File("empty.txt") + ": text file is empty");

  test::WriteBytes(dir.File("latin1.txt"), "caf\xe9 au lait");
  CHECK_THROWS_WITH(LoadText(dir.File("latin1.txt")),
                    dir.File("latin1.txt") + ": invalid UTF-8 at byte offset 3");

  CHECK_THROWS_WITH(LoadText(dir.File("absent.txt")),
                    Catch::StartsWith(dir.File("absent.txt") + ": cannot open"));
}
