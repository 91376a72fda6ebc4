// SHA-256 against FIPS 180-4's example messages (NIST's published digests), whole and fed in
// pieces that split OpenSSL's 64-byte blocks anywhere.
#include "formats/sha256.h"

#include <catch2/catch.hpp>
#include <string>

using namespace kvfold;

namespace {

// `message` fed `piece` bytes at a time.
std::string InPieces(const std::string& message, std::size_t piece) {
  Sha256 h;
  for (std::size_t at = 0; at < message.size(); at += piece)
    h.Update(std::string_view(message).substr(at, piece));
  return h.HexDigest();
}

}  // namespace

TEST_CASE("SHA-256 gives FIPS 180-4's digests", "[formats][sha256]") {
  CHECK(Sha256Hex("") == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  CHECK(Sha256Hex("abc") == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  const std::string two_blocks = "abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq";
  const std::string expected = "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1";
  CHECK(Sha256Hex(two_blocks) == expected);
  for (const std::size_t piece : {1, 7, 55, 63, 64, 65})
    CHECK(InPieces(two_blocks, piece) == expected);
  const std::string million(1000000, 'a');
  const std::string a_million = "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0";
  CHECK(Sha256Hex(million) == a_million);
  CHECK(InPieces(million, 4093) == a_million);
}
