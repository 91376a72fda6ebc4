#include "formats/positioned_io.h"

#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "formats/error.h"

namespace kvfold {
namespace {

void Transfer(bool write, int fd, char* p, std::size_t size, std::uint64_t offset,
              const std::string& where) {
  while (size > 0) {
    const ssize_t n = write ? ::pwrite(fd, p, size, static_cast<off_t>(offset))
                            : ::pread(fd, p, size, static_cast<off_t>(offset));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      Fail(where, std::string(write ? "write" : "read") +
                      " failed: " + (n < 0 ? std::strerror(errno) : "short transfer"));
    }
    p += n;
    size -= static_cast<std::size_t>(n);
    offset += static_cast<std::uint64_t>(n);
  }
}

}  // namespace

void WriteAt(int fd, const void* data, std::size_t size, std::uint64_t offset,
             const std::string& where) {
  Transfer(true, fd, const_cast<char*>(static_cast<const char*>(data)), size, offset, where);
}

void ReadAt(int fd, void* data, std::size_t size, std::uint64_t offset, const std::string& where) {
  Transfer(false, fd, static_cast<char*>(data), size, offset, where);
}

}  // namespace kvfold
