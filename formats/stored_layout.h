// StoredLayout: how a checkpoint's files hold the tensors kvfold addresses by role
// (formats/tensor_names.h). The Llama family stores one tensor per role, in kvfold's channel
// order. Phi-3 stores q/k/v as self_attn.qkv_proj.weight and gate/up as mlp.gate_up_proj.weight
// (rows in that order), and with partial rotary a head's channels as [rotated first half,
// rotated second half, passed through]. kvfold orders a head as [rotated first half, first half
// of the pass-through, rotated second half, second half of the pass-through], so that rotary
// pair j is (j, j + head_dim / 2) for every j and the pass-through pairs have frequency zero:
// every fold, kernel and statistic of a rotary pair then holds unchanged. Checkpoints are read
// through views (TensorStore::SplitRows) and written back in the stored layout.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "formats/model_config.h"
#include "formats/safetensors_writer.h"
#include "formats/tensor_names.h"
#include "formats/tensor_store.h"

namespace kvfold {

// Per head: kvfold's channel c is stored channel order[c]. Empty when the orders agree.
std::vector<std::int64_t> HeadChannelOrder(const ModelConfig& config);

// Per-channel values of whole heads ([n, head_dim], e.g. key ranges) between kvfold's channel
// order and the checkpoint's, for tables a runtime reads beside the checkpoint.
std::vector<float> ChannelsAsStored(const ModelConfig& config, const std::vector<float>& values);
std::vector<float> ChannelsAsKvfold(const ModelConfig& config, const std::vector<float>& values);

// The stored names of layer l's fused tensors: "model.layers.l.self_attn.qkv_proj.weight" and
// "model.layers.l.mlp.gate_up_proj.weight".
std::string FusedQkvName(int layer);
std::string FusedGateUpName(int layer);

// Makes `store` (just opened, with `config`) hold its tensors under their role names in kvfold's
// channel order: fused tensors split into views, q/k rows reordered. Throws Error naming a
// fused tensor that is missing or of the wrong size.
void MapStoredLayout(const ModelConfig& config, TensorStore& store);

// The output side: takes tensors by role, in kvfold's order, and hands `emit` the tensors of the
// stored layout (a fused tensor once all its parts have arrived; others at once).
class StoredLayoutWriter {
 public:
  using Emit = std::function<void(const TensorToWrite&)>;
  StoredLayoutWriter(const ModelConfig& config, Emit emit);
  void Add(const std::optional<TensorId>& id, const TensorToWrite& t);
  // Throws Error when a fused tensor lacks a part (an internal error: a layer written partly).
  void Finish() const;

 private:
  struct Part {
    DType dtype;
    std::vector<std::int64_t> shape;
    std::string bytes;
  };
  void AddPart(const std::string& fused, std::size_t index, std::size_t count,
               const TensorToWrite& t);
  ModelConfig config_;
  Emit emit_;
  std::vector<std::int64_t> head_order_;
  std::map<std::string, std::vector<std::optional<Part>>> pending_;
};

}  // namespace kvfold
