// The converted mode's Stepper reads a layer once while its tensors stay unchanged, carries shared
// K/V (within the hidden-state budget), and a layer's weights are read into the buffers of the
// layer a sweep is done with.
// ATen before Catch: its logging defines a CHECK that Catch's must replace.
#include <ATen/ATen.h>

#include <algorithm>
#include <catch2/catch.hpp>
#include <map>
#include <random>
#include <string>
#include <vector>

#include "formats/checkpoint.h"
#include "formats/tensor_names.h"
#include "runtime_check/forward_flop.h"
#include "runtime_check/layer_prefetch.h"
#include "runtime_check/llama_forward.h"
#include "runtime_check/reference_model.h"
#include "tests/test_support.h"

using namespace kvfold;
using kvfold::test::SharedPath;

namespace {

// A checkpoint as a LayerWeightSource that counts reads and whose tensors can be replaced (a
// pass's rewrite), each replacement with a new generation.
struct CountingSource {
  explicit CountingSource(const Checkpoint& checkpoint) : ck(checkpoint) {}
  const Checkpoint& ck;
  bool tells_generations = true;
  std::map<std::string, std::vector<float>> replaced;
  std::map<std::string, std::uint64_t> generations;
  std::map<std::string, int> reads;

  LayerWeightSource Source() {
    LayerWeightSource s{[this](const std::string& n) { return ck.tensors.Find(n) != nullptr; },
                        [this](const std::string& n) { return ck.tensors.Get(n).entry->shape; },
                        [this](const std::string& n, float* out) {
                          ++reads[n];
                          const auto it = replaced.find(n);
                          if (it == replaced.end()) return ck.tensors.ReadF32(n, out);
                          std::copy(it->second.begin(), it->second.end(), out);
                        },
                        {}};
    if (tells_generations) s.generation = [this](const std::string& n) { return generations[n]; };
    return s;
  }
  void Replace(const std::string& name, std::vector<float> values) {
    replaced[name] = std::move(values);
    ++generations[name];
  }
};

// Everything the layer shows: the residual stream entering it and its attention context.
class Recorder : public LayerObserver {
 public:
  unsigned Wants(int) const override { return kCaptureResidual | kCaptureContext; }
  void Observe(const AttentionCapture& c) override {
    values.insert(values.end(), c.residual.data, c.residual.data + c.residual.size());
    values.insert(values.end(), c.context.data, c.context.data + c.context.size());
  }
  std::vector<float> values;
};

// Two batches of two 32-token windows of random ids.
std::vector<ReferenceModel::ObservedBatch> TwoBatches(unsigned seed) {
  std::vector<ReferenceModel::ObservedBatch> batches(2);
  std::mt19937 rng(seed);
  for (std::size_t b = 0; b < batches.size(); ++b) {
    for (int i = 0; i < 2 * 32; ++i) batches[b].tokens.push_back(static_cast<int>(rng() % 512));
    batches[b].windows = 2;
    batches[b].first_sequence = static_cast<std::int64_t>(2 * b);
  }
  return batches;
}

// Per layer, as the converter runs a K/V pass with the o_proj refit: observe, rewrite k_proj,
// observe again, advance. Returns everything observed.
std::vector<float> Convert(CountingSource& source) {
  const Checkpoint& ck = source.ck;
  RuntimeOptions o{"cpu", 2};
  o.stream_layers = true;
  const auto model = ReferenceModel::Load(ck, o);
  ReferenceModel::Stepper stepper(*model, TwoBatches(7));
  std::vector<Recorder> recorders(stepper.slots());  // one per data-parallel slot
  std::vector<LayerObserver*> observers;
  for (Recorder& r : recorders) observers.push_back(&r);
  for (int l = 0; l < ck.config.num_hidden_layers; ++l) {
    const LayerWeightSource weights = source.Source();
    stepper.Run(l, ck.config, weights, observers, false);
    const std::string k = HfTensorName({TensorRole::kKProj, l});
    std::vector<float> scaled = ck.tensors.ReadF32(k);
    for (float& x : scaled) x *= 1.5f;
    source.Replace(k, scaled);
    stepper.Run(l, ck.config, weights, observers, false);
    stepper.Run(l, ck.config, weights, {}, true);
  }
  std::vector<float> all;
  for (const Recorder& r : recorders) all.insert(all.end(), r.values.begin(), r.values.end());
  return all;
}

// Everything observed stepping `layout` (its K/V sharing) through every layer under a hidden-state
// budget.
std::vector<float> Step(const Checkpoint& ck, const ModelConfig& layout, std::uint64_t budget) {
  RuntimeOptions o{"cpu", 2};
  o.stream_layers = true;
  o.hidden_state_budget_bytes = budget;
  const auto model = ReferenceModel::Load(ck, o);
  ReferenceModel::Stepper stepper(*model, TwoBatches(11));
  std::vector<Recorder> recorders(stepper.slots());
  std::vector<LayerObserver*> observers;
  for (Recorder& r : recorders) observers.push_back(&r);
  CountingSource source{ck};
  const LayerWeightSource weights = source.Source();
  for (int l = 0; l < ck.config.num_hidden_layers; ++l)
    stepper.Run(l, layout, weights, observers, true);
  std::vector<float> all;
  for (const Recorder& r : recorders) all.insert(all.end(), r.values.begin(), r.values.end());
  return all;
}

}  // namespace

TEST_CASE("a stepper carries shared K/V to the layers that read it, spilled beyond the budget",
          "[runtime][stepper][shared]") {
  const Checkpoint ck = OpenCheckpoint(SharedPath("models/stories260K"));
  REQUIRE(ck.config.num_hidden_layers == 5);
  ModelConfig layout = ck.config;
  layout.kv_layer_of = {0, 0, 0, 3, 3};  // mlkv: layers 1, 2 read layer 0's K/V, 4 reads 3's
  const std::vector<float> resident = Step(ck, layout, UINT64_MAX);
  // Budget 0 spills every batch of the hidden states and of both K/V layers; one batch's hidden
  // state (64 tokens x 64 floats) keeps the first batch of each store in memory and spills the
  // second. Float32 values written and read back: bit for bit.
  CHECK(Step(ck, layout, 0) == resident);
  CHECK(Step(ck, layout, 64 * 64 * sizeof(float)) == resident);
  // Sharing is in effect: the layers that read another layer's K/V see other contexts.
  CHECK(Step(ck, ck.config, UINT64_MAX) != resident);
}

TEST_CASE("a stepper reads each tensor of a layer once until the tensor changes",
          "[runtime][stepper][shared]") {
  const Checkpoint ck = OpenCheckpoint(SharedPath("models/stories260K"));
  CountingSource cached{ck};
  const std::vector<float> seen = Convert(cached);
  CountingSource uncached{ck};
  uncached.tells_generations = false;  // the same source, read afresh by every Run
  const std::vector<float> expected = Convert(uncached);
  // The same float32 values through the same operations: bit for bit, or a stale k_proj.
  REQUIRE(seen.size() == expected.size());
  CHECK(seen == expected);
  for (int l = 0; l < ck.config.num_hidden_layers; ++l) {
    INFO("layer " << l);
    // q, k and v are read as one stacked matrix: k's change reads the three again.
    for (const TensorRole r : {TensorRole::kQProj, TensorRole::kKProj, TensorRole::kVProj}) {
      CHECK(cached.reads[HfTensorName({r, l})] == 2);
      CHECK(uncached.reads[HfTensorName({r, l})] == 3);
    }
    for (const TensorRole r :
         {TensorRole::kOProj, TensorRole::kGateProj, TensorRole::kUpProj, TensorRole::kDownProj,
          TensorRole::kAttnNorm, TensorRole::kMlpNorm}) {
      CHECK(cached.reads[HfTensorName({r, l})] == 1);
      CHECK(uncached.reads[HfTensorName({r, l})] == 3);
    }
  }
}

TEST_CASE("a layer's weights are read into the buffers of the layer the sweep is done with",
          "[runtime][stepper][shared]") {
  const Checkpoint ck = OpenCheckpoint(SharedPath("models/stories260K"));
  const at::Device cpu(at::kCPU);
  CountingSource source{ck};
  const LayerWeightSource weights = source.Source();
  LayerWeightCache cache;
  const void* down = nullptr;
  at::Tensor held;  // a tensor still in use when its layer retires: never a spare
  {
    const LlamaLayerWeights w = LoadLayerWeights(weights, ck.config, 0, cpu, &cache);
    down = w.w_down.data_ptr();
    held = w.w_gate_up;
  }
  cache.Retire();
  CHECK(cache.spares.size() > 0);
  const std::size_t spares = cache.spares.size();
  const LlamaLayerWeights w1 = LoadLayerWeights(weights, ck.config, 1, cpu, &cache);
  CHECK(cache.spares.size() < spares);  // taken, not copied
  CHECK(w1.w_down.data_ptr() == down);
  CHECK(w1.w_gate_up.data_ptr() != held.data_ptr());
  // Copies of the same stored values: exactly equal, each layer its own.
  CHECK(at::equal(w1.w_down, LoadLayerWeights(ck, 1, cpu).w_down));
  CHECK(at::equal(w1.w_gate_up, LoadLayerWeights(ck, 1, cpu).w_gate_up));
  CHECK(at::equal(held, LoadLayerWeights(ck, 0, cpu).w_gate_up));

  SECTION("the streamed sweep's read-ahead fills the buffers of the layer before last") {
    RuntimeOptions o{"cpu", 2};
    o.stream_layers = true;
    const auto model = ReferenceModel::Load(ck, o);
    LayerPrefetch layers(model->impl(), {0, 1, 2});
    const void* first = layers.Take(0)->w_down.data_ptr();
    layers.Take(1);
    const auto w2 = layers.Take(2);
    CHECK(w2->w_down.data_ptr() == first);
    CHECK(at::equal(w2->w_down, LoadLayerWeights(ck, 2, cpu).w_down));
  }
}

namespace {

// An observer that wants one capture and keeps nothing.
class Wanting : public LayerObserver {
 public:
  explicit Wanting(unsigned bits) : bits_(bits) {}
  unsigned Wants(int) const override { return bits_; }
  void Observe(const AttentionCapture&) override {}

 private:
  unsigned bits_;
};

}  // namespace

TEST_CASE("the forwards' FLOP count is what each run of a layer computed",
          "[runtime][stepper][flop]") {
  const Checkpoint ck = OpenCheckpoint(SharedPath("models/stories260K"));
  const ModelConfig& c = ck.config;
  RuntimeOptions o{"cpu", 2};
  o.stream_layers = true;
  const auto model = ReferenceModel::Load(ck, o);
  ReferenceModel::Stepper stepper(*model, TwoBatches(3));  // 4 sequences of 32 tokens
  // From the config alone (independent of the runtime's tensors): 2 per multiply-add.
  const std::uint64_t N = 4 * 32, D = 64, H = 8, KV = 4, d = 8, I = 172;
  REQUIRE(c.hidden_size == D);
  REQUIRE(c.intermediate_size == I);
  const std::uint64_t qkv = 2 * N * D * (H + 2 * KV) * d;
  const std::uint64_t attention = 4 * H * d * 4 * (32 * 33 / 2);  // causal (query, key) pairs
  const std::uint64_t rest = 2 * N * (H * d * D + 3 * D * I);     // o_proj, gate, up, down
  std::vector<Wanting> queries(stepper.slots(), Wanting(kCaptureQueryPreRope));
  std::vector<Wanting> contexts(stepper.slots(), Wanting(kCaptureContext));
  std::vector<LayerObserver*> to_queries, to_contexts;
  for (std::size_t s = 0; s < stepper.slots(); ++s) {
    to_queries.push_back(&queries[s]);
    to_contexts.push_back(&contexts[s]);
  }
  CountingSource source{ck};
  const LayerWeightSource weights = source.Source();
  const auto counted = [&](const std::vector<LayerObserver*>& observers, bool advance) {
    const std::uint64_t before = ForwardFlop();
    stepper.Run(0, c, weights, observers, advance);
    return ForwardFlop() - before;
  };
  CHECK(counted(to_queries, false) == qkv);  // stops after the projections
  CHECK(counted(to_contexts, false) == qkv + attention);
  CHECK(counted({}, true) == qkv + attention + rest);
  CHECK(CausalPairs(5, 0) == 15);
  CHECK(CausalPairs(5, 2) == 1 + 2 * 4);  // the first query sees 1 key, every later one 2
  CHECK(CausalPairs(5, 9) == 15);
}
