// ShardedSafetensorsWriter: a model's weights written as they become ready, one tensor at a
// time, into safetensors shards of bounded size (HF layout: model.safetensors alone, or
// model-0000i-of-0000N.safetensors plus model.safetensors.index.json). A converter can then
// write each layer as soon as it is done and free it, instead of holding the model until the end.
//
// A shard's header can only be written once its tensors are known, so each shard sets aside
// `header_reserve` bytes at its start and fills them when it closes: the JSON, then spaces (the
// safetensors format allows a header padded with trailing whitespace; the data stays 8-byte
// aligned). A shard closes before a tensor that would overflow either its data bytes or its
// header space. Files appear under their final names in Finish() only (atomic, each fsynced).
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "formats/safetensors_writer.h"

namespace kvfold {

class AtomicFile;

class ShardedSafetensorsWriter {
 public:
  ShardedSafetensorsWriter(std::string dir, std::uint64_t max_shard_bytes,
                           std::uint64_t header_reserve,
                           std::map<std::string, std::string> metadata);
  ~ShardedSafetensorsWriter();  // removes every shard unless Finish() succeeded
  ShardedSafetensorsWriter(const ShardedSafetensorsWriter&) = delete;
  ShardedSafetensorsWriter& operator=(const ShardedSafetensorsWriter&) = delete;

  // Appends `t` (its bytes are copied out before returning; mapped pages are released as they
  // are written). Throws Error naming the folder on a bad size, a duplicate name, a failed write.
  void Add(const TensorToWrite& t);
  // Closes the last shard, moves every shard to its final name and writes the index when there
  // are several. Returns the file names written, relative to the folder.
  std::vector<std::string> Finish();

  // The most header bytes a tensor with this name, dtype and shape can take in any shard.
  static std::uint64_t EntryBound(const std::string& name, DType dtype,
                                  const std::vector<std::int64_t>& shape);

 private:
  struct Shard;
  void OpenShard(std::uint64_t reserve);
  void CloseShard();
  std::string dir_;
  std::uint64_t max_shard_bytes_;
  std::uint64_t header_reserve_;
  std::map<std::string, std::string> metadata_;
  std::uint64_t metadata_bound_;
  std::vector<std::unique_ptr<Shard>> shards_;
  bool open_ = false;                            // the last shard takes more tensors
  std::map<std::string, std::size_t> shard_of_;  // tensor name -> shard index
  std::uint64_t total_bytes_ = 0;
  bool finished_ = false;
};

}  // namespace kvfold
