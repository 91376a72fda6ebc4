#include "formats/sha256.h"

#include <openssl/evp.h>

#include "formats/error.h"
#include "formats/mapped_file.h"

namespace kvfold {
namespace {

void Check(int ok, const char* step) {
  if (ok != 1) Fail("SHA-256", std::string("OpenSSL failed to ") + step);
}

}  // namespace

Sha256::Sha256() : context_(EVP_MD_CTX_new(), EVP_MD_CTX_free) {
  if (context_ == nullptr) Fail("SHA-256", "OpenSSL could not make a digest context");
  Check(EVP_DigestInit_ex(context_.get(), EVP_sha256(), nullptr), "start a digest");
}

void Sha256::Update(std::string_view bytes) {
  Check(EVP_DigestUpdate(context_.get(), bytes.data(), bytes.size()), "hash");
}

std::string Sha256::HexDigest() {
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int size = 0;
  Check(EVP_DigestFinal_ex(context_.get(), digest, &size), "finish a digest");
  static const char* hex = "0123456789abcdef";
  std::string out;
  for (unsigned int i = 0; i < size; ++i) {
    out += hex[digest[i] >> 4];
    out += hex[digest[i] & 0xf];
  }
  return out;
}

std::string Sha256Hex(std::string_view bytes) {
  Sha256 h;
  h.Update(bytes);
  return h.HexDigest();
}

std::string Sha256OfFile(const std::string& path) {
  MappedFile f(path);
  return Sha256Hex(f.bytes());
}

}  // namespace kvfold
