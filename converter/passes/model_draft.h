// ModelDraft: the checkpoint a pipeline is rewriting. Unchanged tensors stay views of the
// source's mmap; only tensors a pass replaces are held in memory (as float32 until sealed, then
// in their output dtype until written). With an output open, a layer is written as soon as the
// converter is done with it and its replacements are freed: the draft holds about one layer.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "converter/export/model_exporter.h"
#include "converter/passes/write_behind.h"
#include "formats/checkpoint.h"
#include "formats/dtype.h"

namespace kvfold {

class ModelDraft {
 public:
  explicit ModelDraft(const Checkpoint& source);
  ~ModelDraft();  // an output not finished by WriteTo is removed

  const Checkpoint& source() const { return source_; }
  ModelConfig config;  // passes update it together with the tensors

  // Tensors are addressed by their typed id (formats/tensor_names.h); the draft stores them
  // under the HF name, the name the source has them by.
  bool Has(const TensorId& id) const { return Has(HfTensorName(id)); }
  std::vector<std::int64_t> Shape(const TensorId& id) const { return Shape(HfTensorName(id)); }
  std::vector<float> ReadF32(const TensorId& id) const { return ReadF32(HfTensorName(id)); }
  void Replace(const TensorId& id, std::vector<std::int64_t> shape, std::vector<float> data) {
    Replace(HfTensorName(id), std::move(shape), std::move(data));
  }
  // Like Replace, for a new tensor that must be written as `dtype` (e.g. float32 scales in a
  // bf16 checkpoint) rather than in the source's attention dtype.
  void Add(const TensorId& id, std::vector<std::int64_t> shape, std::vector<float> data,
           DType dtype);
  void Remove(const TensorId& id) { Remove(HfTensorName(id)); }
  // By HF name, for the runtime's weight reader (converter/layer_loop.cc), which reads a layer
  // of the draft as it reads a checkpoint.
  bool Has(const std::string& name) const;
  std::vector<std::int64_t> Shape(const std::string& name) const;
  std::vector<float> ReadF32(const std::string& name) const;
  // The same values written to `out` (Shape(name)'s element count), without a vector between.
  void ReadF32(const std::string& name, float* out) const;
  // Changes whenever the values ReadF32(name) gives may have: 0 for a source tensor never
  // touched; Replace, Add, Remove and the rounding of SealLayer each give a new number.
  std::uint64_t Generation(const std::string& name) const;

  // Converts every tensor replaced or added in `layer` to the dtype it will be written in and
  // frees its float32 copy: a converter done with a layer holds its bytes, not twice as many.
  // Reading such a tensor back gives the rounded values. Throws Error naming a tensor whose
  // values are not finite or overflow its dtype (as WriteTo would).
  void SealLayer(int layer);

  // Starts the output (converter/export/model_exporter.h): WriteLayer then hands it each layer
  // as it is done.
  void OpenOutput(std::unique_ptr<ModelExporter> exporter);
  // Seals layer `layer` and hands its tensors, in name order, to the open output (no-op
  // without one); its replacements can no longer be read back. The output writes them on a
  // thread of its own while the caller goes on (their bytes are freed once written); an error
  // it meets is thrown by the next WriteLayer, FlushOutput, WriteRemaining or FinishOutput.
  void WriteLayer(int layer);
  // Returns once every layer handed to the output is written; rethrows a write's error.
  void FlushOutput() { writer_.Wait(); }
  // For a rank that computes the conversion but does not write it (formats/ranks.h): WriteLayer
  // then frees each layer as if written, and WriteTo must not be called.
  void DiscardOutput() { discard_output_ = true; }

  // Hands the open output the tensors not written yet (every layer in order, then the tensors
  // of no layer; each in the source's dtype). The output is the same bytes whether layers were
  // written as they finished or all here. Throws Error naming a tensor whose values are not
  // finite or overflow its dtype.
  void WriteRemaining();
  // Source files the open output leaves behind, as "name (why)".
  std::vector<std::string> NotCopied() const;
  // Finishes the open output (config, tokenizer, added files, `provenance` as kvfold.json when
  // given) after WriteRemaining; returns the files written.
  std::vector<std::string> FinishOutput(const nlohmann::ordered_json* provenance);
  // All three into the existing folder `dir` as a HuggingFace checkpoint (the open output's
  // if any), without provenance. `not_copied` receives the source files left behind.
  std::vector<std::string> WriteTo(const std::string& dir,
                                   std::vector<std::string>* not_copied = nullptr);

  // A file a pass adds beside the model: write(path) creates it (atomically) when the draft is
  // written. Source files of kvfold's own (kvfold.json, reports, eviction tables) never travel.
  void AddOutputFile(const std::string& name, std::function<void(const std::string& path)> write);

 private:
  void Replace(const std::string& name, std::vector<std::int64_t> shape, std::vector<float> data);
  void Remove(const std::string& name);
  std::vector<std::string> Names() const;
  struct Replacement {
    std::vector<std::int64_t> shape;
    std::vector<float> data;     // empty once sealed
    std::optional<DType> dtype;  // new tensors only; else the source's (or its attention) dtype
    std::string sealed;          // SealLayer: the bytes to write
    bool written = false;        // WriteLayer: in the output, bytes freed
  };
  void RequireUnwritten(const std::string& name) const;  // a written layer is final
  // A tensor on its way to the output: its bytes owned here, or mapped from the source.
  struct Outgoing {
    std::optional<TensorId> id;
    TensorToWrite tensor;
    std::string owned;
  };
  Outgoing Unchanged(const std::string& name) const;  // a source tensor, as the output takes it
  void Send(Outgoing& t);  // to the output, its bytes pointing at `owned` where it has them
  DType OutputDType(const std::string& name, const Replacement& r) const;
  std::string OutputBytes(const std::string& name, const Replacement& r) const;
  const Checkpoint& source_;
  void Touch(const std::string& name) { generations_[name] = ++last_generation_; }
  std::map<std::string, Replacement> replaced_;
  std::vector<std::string> removed_;
  std::map<std::string, std::uint64_t> generations_;
  std::uint64_t last_generation_ = 0;
  ExtraFiles extra_files_;
  std::unique_ptr<ModelExporter> output_;
  std::set<int> layers_written_;
  bool discard_output_ = false;
  // Last: destroyed first, so a write still running ends before the output and draft it uses.
  WriteBehind writer_;
};

}  // namespace kvfold
