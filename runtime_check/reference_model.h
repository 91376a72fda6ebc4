// ReferenceModel: kvfold's reference runtime for the Llama family (RMSNorm, rotate_half RoPE,
// GQA, SwiGLU) on LibTorch, CPU or CUDA. This header is LibTorch-free; only the runtime's own
// sources include ATen, which keeps the rest of the build fast.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "calib/layer_observer.h"
#include "formats/checkpoint.h"
#include "runtime_check/kv_cache_policy.h"

namespace kvfold {

struct LlamaLayerWeights;  // runtime_check/llama_forward.h

// kvfold's default for the hidden states a sweep keeps in memory (--hidden-memory): 65536
// calibration tokens of a width-8192 model (2 GiB) stay resident.
inline constexpr std::uint64_t kDefaultHiddenMemoryBytes = std::uint64_t{4096} << 20;

struct RuntimeOptions {
  std::string device = "cpu";     // "cpu", "cuda" or "cuda:N"
  int threads = 0;                // CPU threads (LibTorch and OpenBLAS); 0 = every core
  bool fused_cpu_kernels = true;  // false: attention through plain ATen ops (for cross-checks)
  // Models whose layers read a higher layer's K/V (LCKV): 0 = exact token-by-token decoding;
  // m > 0 = the paper's parallel prompt encoding with m iterations (approximate for m < T).
  int lckv_iterations = 0;
  bool token_by_token = false;  // decode every model one token at a time (a cross-check)
  // Read each layer from the checkpoint when a sweep reaches it instead of holding every
  // weight: memory is one layer plus the hidden states, at the price of re-reading the weights
  // on every call (sweep many batches at once). Models decoded token by token stay resident.
  bool stream_layers = false;
  // Streaming: read the next layer on another thread while this one runs (two layers in memory).
  bool prefetch_layers = true;
  // Hidden states a sweep keeps in memory (per model); batches beyond it go to a temporary file
  // (runtime_check/hidden_state_store.h).
  std::uint64_t hidden_state_budget_bytes = UINT64_MAX;
};

// Where a layer's weights come from when they are not the checkpoint's: a converter's draft.
// Tensors are named as in HF checkpoints; read writes the float32 values of shape(name) to `out`
// (stacked tensors are read into their place: one copy of each weight, not three).
struct LayerWeightSource {
  std::function<bool(const std::string& name)> has;
  std::function<std::vector<std::int64_t>(const std::string& name)> shape;
  std::function<void(const std::string& name, float* out)> read;
  // Optional: a number that changes whenever the tensor's values do. With it a Stepper reads a
  // layer's tensors once and keeps them while they stay unchanged (observe, observe again after
  // a pass rewrote K/V, advance: the MLP is read once, not three times).
  std::function<std::uint64_t(const std::string& name)> generation;
};

class ReferenceModel {
 public:
  // Loads every weight of `checkpoint` as float32 onto the device (with stream_layers: only
  // the final norm; `checkpoint` must then outlive the model). Throws Error for a device this
  // LibTorch cannot use.
  static std::unique_ptr<ReferenceModel> Load(const Checkpoint& checkpoint,
                                              const RuntimeOptions& options);
  ~ReferenceModel();

  const ModelConfig& config() const;
  std::string device() const;

  // Logits for one sequence, row-major [ids.size(), vocab] (logits[i] predicts token i+1).
  // With `cache`, attention reads only what that decode-time cache policy keeps.
  std::vector<float> Logits(const std::vector<std::int32_t>& ids, LayerObserver* observer = nullptr,
                            const KvCachePolicy* cache = nullptr) const;

  // Runs a batch of equal-length sequences ([batch][T] row-major) only for the observer's sake.
  void Observe(const std::vector<std::int32_t>& tokens, int batch, LayerObserver& observer) const;

  // Runs many such batches layer by layer (each layer fetched once) for the observers' sake:
  // batch b, whose sequences are numbered from first_sequence[b], is watched by
  // observers[b % observers.size()], one observer per data-parallel slot (DataParallelSlots).
  // after_layer(layers_done) follows each layer.
  struct ObservedBatch {
    std::vector<std::int32_t> tokens;  // [windows][T] row-major
    int windows = 0;
    std::int64_t first_sequence = 0;
  };
  void ObserveSweep(const std::vector<ObservedBatch>& batches,
                    const std::vector<LayerObserver*>& observers,
                    const std::function<void(std::int64_t layers_done)>& after_layer) const;

  // The residual stream after the last layer (before the final norm) of every window of
  // `batches`: each(sequence, rows) with rows [T, D] row-major, in batch and window order.
  void FinalStates(const std::vector<ObservedBatch>& batches,
                   const std::function<void(std::int64_t sequence, const float* rows)>& each) const;

  // A sweep driven from outside, one layer at a time: the converter runs layer l with the
  // weights it is writing (observing it, possibly more than once as passes rewrite it), then
  // advances the batches' hidden states through it, so that layer l + 1 is calibrated on what
  // the converted model feeds it. Only the hidden states live across calls, and, when the layer
  // configs share K/V between layers, each source layer's K/V until the last layer reading it
  // has run (each source's K/V in memory up to the hidden states' budget, in a temporary file
  // beyond it). A layer reading a higher layer's K/V (lckv) runs only once another Stepper has
  // handed it that layer's K/V (HandKvTo).
  class Stepper {
   public:
    Stepper(const ReferenceModel& model, const std::vector<ObservedBatch>& batches);
    ~Stepper();
    std::size_t slots() const;  // observers per Run: one per data-parallel slot
    // Layer l as `layer_config`'s head counts say, with weights from `weights`, over every
    // batch; batch b is watched by observers[b % size] (may be empty); `advance` moves the
    // hidden states past the layer.
    void Run(int layer, const ModelConfig& layer_config, const LayerWeightSource& weights,
             const std::vector<LayerObserver*>& observers, bool advance);
    // The next Run of `layer` with advance keeps its K/V of every token, whether or not a later
    // layer reads it; HandKvTo then moves them to `to`, whose layers below `layer` read them
    // (heal after lckv seeds the converted sweep with them).
    void KeepKv(int layer);
    void HandKvTo(int layer, Stepper& to);

   private:
    struct State;
    void RunLayer(int layer, const LlamaLayerWeights& w,
                  const std::vector<LayerObserver*>& observers, bool advance);
    std::unique_ptr<State> state_;
  };

  struct Impl;  // defined in runtime_check/llama_forward.h (LibTorch)
  const Impl& impl() const { return *impl_; }

 private:
  explicit ReferenceModel(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace kvfold
