#include "converter/export/hf_exporter.h"

#include <algorithm>
#include <cstdint>

#include "converter/export/decilm_config.h"
#include "formats/atomic_file.h"
#include "formats/companion_files.h"
#include "formats/mapped_file.h"
#include "formats/safetensors_shards.h"
#include "formats/stored_layout.h"

namespace kvfold {
namespace {

class HfExporter : public ModelExporter {
 public:
  HfExporter(std::string dir, const Checkpoint& source)
      : dir_(std::move(dir)),
        companions_(FindCompanionFiles(source.dir)),
        layout_(source.config, [this](const TensorToWrite& t) { shards_->Add(t); }) {
    // Shard like the source: at most as large as its largest weight file. Header space for
    // twice the source's tensors covers what passes add (scales, key projections) in one shard.
    std::uint64_t max_shard = 0, header = 0;
    for (const auto& f : source.tensors.files()) {
      std::uint64_t size = 0;
      for (const auto& e : f->header().tensors) size += e.end - e.begin;
      max_shard = std::max(max_shard, size);
    }
    for (const auto& [name, ref] : source.tensors.tensors()) {
      header += 2 * ShardedSafetensorsWriter::EntryBound(name, ref.entry->dtype, ref.entry->shape);
    }
    if (source.tensors.files().size() <= 1) max_shard = UINT64_MAX;
    shards_ = std::make_unique<ShardedSafetensorsWriter>(
        dir_, max_shard, header, std::map<std::string, std::string>{{"format", "pt"}});
  }

  // Tensors arrive in kvfold's layout; the checkpoint keeps its own (formats/stored_layout.h).
  void Add(const std::optional<TensorId>& id, const TensorToWrite& t) override {
    layout_.Add(id, t);
  }

  std::vector<std::string> Finish(const ExportedModel& m) override {
    layout_.Finish();
    std::vector<std::string> written = shards_->Finish();
    const std::string config = m.source.dir + "/config.json";
    WriteFileAtomically(dir_ + "/config.json",
                        UpdateConfigJson(ReadFileToString(config), m.config, config));
    written.push_back("config.json");
    if (m.config.PerLayerKvHeads()) {  // DeciLM: its configuration class (decilm_config.h)
      WriteFileAtomically(dir_ + "/" + kDeciConfigFile, kDeciConfigSource);
      written.push_back(kDeciConfigFile);
    }
    // Tokenizer, generation and license files travel unchanged; nothing else does.
    for (const auto& name : companions_.copy) {
      CopyRegularFile(m.source.dir + "/" + name, dir_ + "/" + name);
      written.push_back(name);
    }
    for (const auto& [name, write] : m.extra_files) {
      write(dir_ + "/" + name);
      written.push_back(name);
    }
    if (m.provenance != nullptr) {
      WriteFileAtomically(dir_ + "/kvfold.json", m.provenance->dump(2) + "\n");
      written.push_back("kvfold.json");
    }
    return written;
  }

  std::vector<std::string> NotCopied() const override { return companions_.skipped; }

 private:
  std::string dir_;
  CompanionFiles companions_;
  std::unique_ptr<ShardedSafetensorsWriter> shards_;
  StoredLayoutWriter layout_;
};

}  // namespace

std::unique_ptr<ModelExporter> MakeHfExporter(const std::string& dir, const Checkpoint& source) {
  return std::make_unique<HfExporter>(dir, source);
}

}  // namespace kvfold
