// SHA-256 (FIPS 180-4), for recording exactly which inputs made an output (kvfold.json): OpenSSL's
// libcrypto, which uses the CPU's SHA instructions where it has them (a checkpoint is hashed
// before conversion starts: 2.2 GB at the TinyLlama-1.1B shape, 140 GB at 70B).
#pragma once

#include <memory>
#include <string>
#include <string_view>

struct evp_md_ctx_st;  // OpenSSL's EVP_MD_CTX

namespace kvfold {

class Sha256 {
 public:
  Sha256();
  void Update(std::string_view bytes);
  std::string HexDigest();  // finishes the hash; call once

 private:
  std::unique_ptr<evp_md_ctx_st, void (*)(evp_md_ctx_st*)> context_;
};

std::string Sha256Hex(std::string_view bytes);
// The hash of a file's bytes (read through mmap); throws Error naming the file.
std::string Sha256OfFile(const std::string& path);

}  // namespace kvfold
