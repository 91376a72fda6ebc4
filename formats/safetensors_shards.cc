#include "formats/safetensors_shards.h"

#include <algorithm>
#include <cstdio>
#include <limits>
#include <nlohmann/json.hpp>

#include "formats/atomic_file.h"
#include "formats/error.h"
#include "formats/mapped_file.h"

namespace kvfold {
namespace {

constexpr std::uint64_t kMaxOffset = std::numeric_limits<std::uint64_t>::max();
constexpr std::size_t kWriteChunk = std::size_t{64} << 20;  // mapped pages released this often

std::uint64_t RoundUp8(std::uint64_t n) { return (n + 7) / 8 * 8; }

nlohmann::json Entry(DType dtype, const std::vector<std::int64_t>& shape, std::uint64_t begin,
                     std::uint64_t end) {
  return {{"dtype", DTypeName(dtype)}, {"shape", shape}, {"data_offsets", {begin, end}}};
}

std::string ShardName(std::size_t i, std::size_t n) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "model-%05zu-of-%05zu.safetensors", i + 1, n);
  return buf;
}

}  // namespace

struct ShardedSafetensorsWriter::Shard {
  std::unique_ptr<AtomicFile> file;
  nlohmann::json header = nlohmann::json::object();
  std::uint64_t reserve = 0;       // header bytes set aside after the 8-byte length
  std::uint64_t header_bound = 0;  // the most the header written so far can take
  std::uint64_t data_bytes = 0;
};

ShardedSafetensorsWriter::ShardedSafetensorsWriter(std::string dir, std::uint64_t max_shard_bytes,
                                                   std::uint64_t header_reserve,
                                                   std::map<std::string, std::string> metadata)
    : dir_(std::move(dir)),
      max_shard_bytes_(max_shard_bytes),
      header_reserve_(header_reserve),
      metadata_(std::move(metadata)),
      metadata_bound_(
          metadata_.empty() ? 2 : nlohmann::json{{"__metadata__", metadata_}}.dump().size() + 1) {}

ShardedSafetensorsWriter::~ShardedSafetensorsWriter() =
    default;  // AtomicFile removes its temporary

std::uint64_t ShardedSafetensorsWriter::EntryBound(const std::string& name, DType dtype,
                                                   const std::vector<std::int64_t>& shape) {
  // "name": entry, with both offsets at their longest
  return nlohmann::json(name).dump().size() + 2 +
         Entry(dtype, shape, kMaxOffset, kMaxOffset).dump().size();
}

void ShardedSafetensorsWriter::OpenShard(std::uint64_t reserve) {
  auto shard = std::make_unique<Shard>();
  shard->reserve = RoundUp8(reserve);
  shard->header_bound = metadata_bound_;
  char pending[64];  // its final name waits for the number of shards
  std::snprintf(pending, sizeof pending, "model-%05zu.safetensors", shards_.size() + 1);
  shard->file = std::make_unique<AtomicFile>(dir_ + "/" + pending);
  const std::string blank(8 + shard->reserve, ' ');
  shard->file->Write(blank);
  shards_.push_back(std::move(shard));
  open_ = true;
}

void ShardedSafetensorsWriter::CloseShard() {
  Shard& s = *shards_.back();
  if (!metadata_.empty()) s.header["__metadata__"] = metadata_;
  std::string text = s.header.dump();
  if (text.size() > s.reserve)
    Fail(dir_, "internal error: a shard header outgrew its reserved space");
  text.append(s.reserve - text.size(), ' ');
  std::uint8_t len[8];
  for (int i = 0; i < 8; ++i) len[i] = static_cast<std::uint8_t>(s.reserve >> (8 * i));
  s.file->Overwrite(0, len, 8);
  s.file->Overwrite(8, text.data(), text.size());
  s.header = nlohmann::json();  // the index keeps what it needs (shard_of_)
  open_ = false;
}

void ShardedSafetensorsWriter::Add(const TensorToWrite& t) {
  if (finished_)
    Fail(dir_, "internal error: tensor '" + t.name + "' added after the shards were finished");
  if (shard_of_.count(t.name)) Fail(dir_, "tensor '" + t.name + "' given twice");
  CheckTensorToWrite(t, dir_);
  const std::uint64_t entry = EntryBound(t.name, t.dtype, t.shape);
  if (open_) {
    const Shard& s = *shards_.back();
    if (s.data_bytes + t.bytes.size() > max_shard_bytes_ || s.header_bound + entry > s.reserve)
      CloseShard();
  }
  if (!open_)
    OpenShard(std::max(header_reserve_, metadata_bound_ + entry));  // room for one tensor at least
  Shard& s = *shards_.back();
  s.header[t.name] = Entry(t.dtype, t.shape, s.data_bytes, s.data_bytes + t.bytes.size());
  s.header_bound += entry;
  for (std::size_t at = 0; at < t.bytes.size(); at += kWriteChunk) {
    const std::string_view chunk = t.bytes.substr(at, kWriteChunk);
    s.file->Write(chunk);
    if (t.mapped) ReleaseMappedPages(chunk);
  }
  s.data_bytes += t.bytes.size();
  total_bytes_ += t.bytes.size();
  shard_of_[t.name] = shards_.size() - 1;
}

std::vector<std::string> ShardedSafetensorsWriter::Finish() {
  if (finished_) Fail(dir_, "internal error: shards finished twice");
  if (!open_) OpenShard(std::max(header_reserve_, metadata_bound_));  // a model with no tensors
  CloseShard();
  finished_ = true;
  const std::size_t n = shards_.size();
  std::vector<std::string> names;
  for (std::size_t i = 0; i < n; ++i)
    names.push_back(n == 1 ? "model.safetensors" : ShardName(i, n));
  for (std::size_t i = 0; i < n; ++i) shards_[i]->file->CommitAs(dir_ + "/" + names[i]);
  if (n == 1) return names;
  nlohmann::json weight_map = nlohmann::json::object();
  for (const auto& [name, shard] : shard_of_) weight_map[name] = names[shard];
  const nlohmann::json index = {{"metadata", {{"total_size", total_bytes_}}},
                                {"weight_map", weight_map}};
  WriteFileAtomically(dir_ + "/model.safetensors.index.json", index.dump(2) + "\n");
  names.push_back("model.safetensors.index.json");
  return names;
}

}  // namespace kvfold
