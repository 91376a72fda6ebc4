// Whole transfers at a file offset: pwrite / pread until every byte moved, EINTR retried. A
// failure is Error("<where>: write failed: <reason>") (or "read failed"); a read that meets the
// end of the file is a "short transfer".
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

namespace kvfold {

void WriteAt(int fd, const void* data, std::size_t size, std::uint64_t offset,
             const std::string& where);
void ReadAt(int fd, void* data, std::size_t size, std::uint64_t offset, const std::string& where);

}  // namespace kvfold
