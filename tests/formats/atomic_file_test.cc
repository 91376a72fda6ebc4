#include "formats/atomic_file.h"

#include <catch2/catch.hpp>
#include <cstdint>
#include <string>
#include <vector>

#include "tests/test_support.h"

using namespace kvfold;
using kvfold::test::ListDir;
using kvfold::test::ReadBytes;
using kvfold::test::TempDir;

TEST_CASE("an atomic file past its write-back hints holds every byte in order",
          "[formats][output]") {
  TempDir tmp;
  const std::string path = tmp.File("big.bin");
  // 34 pieces of 3 MiB + 17 bytes: 102 MiB, past the 64 MiB at which the kernel is asked to start
  // writing back, in pieces that do not divide it; a header overwritten after the hint.
  constexpr std::size_t kPiece = (std::size_t{3} << 20) + 17;
  std::string expected;
  {
    AtomicFile f(path);
    std::string piece(kPiece, '\0');
    for (int i = 0; i < 34; ++i) {
      for (std::size_t k = 0; k < kPiece; ++k)
        piece[k] = static_cast<char>((k * 131 + static_cast<std::size_t>(i) * 7) & 0xff);
      f.Write(piece);
      expected += piece;
    }
    const std::string header = "header";
    f.Overwrite(0, header.data(), header.size());
    expected.replace(0, header.size(), header);
    CHECK(ListDir(tmp.path()).size() == 1);
    CHECK(ListDir(tmp.path()).front() != "big.bin");  // a temporary name until committed
    f.Commit();
  }
  CHECK(ListDir(tmp.path()) == std::vector<std::string>{"big.bin"});
  const std::string got = ReadBytes(path);
  REQUIRE(got.size() == expected.size());
  CHECK(got == expected);
}
