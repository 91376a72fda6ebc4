// SHA-256 (FIPS 180-4), for recording exactly which inputs made an output (kvfold.json).
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

namespace kvfold {

class Sha256 {
 public:
  Sha256();
  void Update(std::string_view bytes);
  std::string HexDigest();  // finishes the hash; call once

 private:
  void Block(const std::uint8_t* p);
  std::uint32_t h_[8];
  std::uint8_t buffer_[64];
  std::size_t buffered_ = 0;
  std::uint64_t length_ = 0;
};

std::string Sha256Hex(std::string_view bytes);
// The hash of a file's bytes (read through mmap); throws Error naming the file.
std::string Sha256OfFile(const std::string& path);

}  // namespace kvfold
