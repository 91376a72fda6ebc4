// A scratch folder for fuzz targets whose readers take paths: each input is written to a file
// there before the reader runs. One folder per process, removed at exit.
#pragma once

#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <string>
#include <string_view>

namespace kvfold::fuzz {

inline const std::string& ScratchDir() {
  // Never freed: the exit handler below still reads it after static destructors have run.
  static const std::string* dir = [] {
    const char* base = std::getenv("TMPDIR");
    auto* d = new std::string(std::string(base ? base : "/tmp") + "/kvfold-fuzz." +
                              std::to_string(::getpid()));
    std::filesystem::create_directories(*d);
    std::atexit([] { std::filesystem::remove_all(ScratchDir()); });
    return d;
  }();
  return *dir;
}

inline void WriteScratch(const std::string& path, std::string_view bytes) {
  std::FILE* f = std::fopen(path.c_str(), "wb");
  if (f == nullptr) std::abort();
  if (!bytes.empty() && std::fwrite(bytes.data(), 1, bytes.size(), f) != bytes.size()) std::abort();
  std::fclose(f);
}

// A safetensors file image: 8-byte little-endian header length, the header, then `data_bytes`
// zero bytes of data.
inline std::string SafetensorsImage(std::string_view header, std::size_t data_bytes) {
  std::string out(8, '\0');
  for (int i = 0; i < 8; ++i)
    out[static_cast<std::size_t>(i)] = static_cast<char>((header.size() >> (8 * i)) & 0xff);
  out.append(header);
  out.append(data_bytes, '\0');
  return out;
}

}  // namespace kvfold::fuzz
