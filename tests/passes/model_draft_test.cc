#include "converter/passes/model_draft.h"

#include <malloc.h>

#include <algorithm>
#include <catch2/catch.hpp>
#include <memory>
#include <string>
#include <vector>

#include "converter/passes/attention_io.h"
#include "formats/checkpoint.h"
#include "formats/error.h"
#include "formats/mapped_file.h"
#include "formats/safetensors_writer.h"
#include "tests/test_support.h"

using namespace kvfold;
using kvfold::test::SharedPath;
using kvfold::test::TempDir;

namespace {

// stories260K stored as F16: the dtype whose range a fold can overflow.
std::string F16Copy(const TempDir& tmp) {
  const std::string src = SharedPath("models/stories260K"), dir = tmp.File("f16");
  REQUIRE(std::system(("mkdir " + dir).c_str()) == 0);
  test::WriteBytes(dir + "/config.json", ReadFileToString(src + "/config.json"));
  const Checkpoint ck = OpenCheckpoint(src);
  std::vector<std::string> blobs;
  std::vector<TensorToWrite> tensors;
  for (const auto& [name, ref] : ck.tensors.tensors()) {
    const std::vector<float> x = ck.tensors.ReadF32(name);
    blobs.emplace_back(x.size() * 2, '\0');
    ConvertFromF32(DType::kF16, x.data(), x.size(), blobs.back().data());
    tensors.push_back({name, DType::kF16, ref.entry->shape, {}});
  }
  for (std::size_t i = 0; i < tensors.size(); ++i) tensors[i].bytes = blobs[i];
  WriteSafetensors(dir + "/model.safetensors", tensors);
  return dir;
}

// An output that records the names it is handed, in order, and fails on one of them as a full
// disk would.
class RecordingExporter : public ModelExporter {
 public:
  RecordingExporter(std::vector<std::string>& added, std::string fails_on)
      : added_(added), fails_on_(std::move(fails_on)) {}
  void Add(const std::optional<TensorId>&, const TensorToWrite& t) override {
    if (t.name == fails_on_) Fail("out/model.safetensors", "No space left on device");
    added_.push_back(t.name);
  }
  std::vector<std::string> Finish(const ExportedModel&) override { return {}; }
  std::vector<std::string> NotCopied() const override { return {}; }

 private:
  std::vector<std::string>& added_;
  std::string fails_on_;
};

// Bytes the C heap has handed out and not had back (small and large allocations).
std::size_t HeapInUse() {
  const struct mallinfo2 m = mallinfo2();
  return m.uordblks + m.hblkhd;
}

}  // namespace

TEST_CASE("a replaced tensor that its dtype cannot hold is refused, naming it",
          "[convert][output][shared]") {
  TempDir tmp;
  const Checkpoint ck = OpenCheckpoint(F16Copy(tmp));
  const TensorId id{TensorRole::kKProj, 2};
  const std::string name = HfTensorName(id);
  ModelDraft draft(ck);
  std::vector<float> w = draft.ReadF32(id);
  w[5] = 1e6f;  // a decode coefficient far beyond F16's 65504
  draft.Replace(id, draft.Shape(id), w);
  REQUIRE(std::system(("mkdir " + tmp.File("out")).c_str()) == 0);
  CHECK_THROWS_WITH(
      draft.WriteTo(tmp.File("out")),
      name +
          ": cannot be written as F16: element 5 is 1000000.000000 (beyond F16's range of 65504)");
  w[5] = 60000.0f;  // large but representable
  draft.Replace(id, draft.Shape(id), w);
  CHECK_NOTHROW(draft.WriteTo(tmp.File("out")));
}

TEST_CASE("layers written as they finish give the bytes of a draft written at the end",
          "[convert][output][shared]") {
  TempDir tmp;
  const Checkpoint ck = OpenCheckpoint(F16Copy(tmp));
  const TensorId k1_id{TensorRole::kKProj, 1};
  const std::string k1 = HfTensorName(k1_id);
  auto edit = [&](ModelDraft& draft) {
    std::vector<float> w = draft.ReadF32(k1_id);
    for (float& x : w) x *= 0.5f;  // exact in F16: the written values are known
    draft.Replace(k1_id, draft.Shape(k1_id), w);
    draft.Add({TensorRole::kKScale, 1}, {1}, {0.25f}, DType::kF32);
  };
  REQUIRE(std::system(("mkdir " + tmp.File("streamed") + " " + tmp.File("at_end")).c_str()) == 0);
  {
    ModelDraft draft(ck);
    draft.OpenOutput(MakeExporter(tmp.File("streamed"), ck, {}));
    for (int l = 0; l < ck.config.num_hidden_layers; ++l) {
      if (l == 1) edit(draft);
      draft.WriteLayer(l);
    }
    // The layer's replacement is freed once written: reading it back is a bug, said loudly.
    CHECK_THROWS_WITH(draft.ReadF32(k1), Catch::Contains("read after it was written"));
    CHECK_THROWS_WITH(draft.Replace(k1_id, {1}, {0.0f}),
                      Catch::Contains("changed after its layer was written"));
    draft.WriteTo(tmp.File("streamed"));
  }
  {
    ModelDraft draft(ck);
    edit(draft);
    draft.WriteTo(tmp.File("at_end"));
  }
  const std::string streamed = ReadFileToString(tmp.File("streamed/model.safetensors"));
  CHECK(streamed == ReadFileToString(tmp.File("at_end/model.safetensors")));
  const Checkpoint out = OpenCheckpoint(tmp.File("streamed"));
  CHECK(out.tensors.ReadF32(k1) == [&] {
    std::vector<float> w = ck.tensors.ReadF32(k1);
    for (float& x : w) x *= 0.5f;
    return w;
  }());
  CHECK(out.tensors.ReadF32("model.layers.1.self_attn.k_scale") == std::vector<float>{0.25f});
  // Layers in order, then the tensors of no layer.
  CHECK(out.tensors.Get("model.layers.0.self_attn.q_proj.weight").entry->begin <
        out.tensors.Get("model.layers.1.mlp.down_proj.weight").entry->begin);
  const std::string last = std::to_string(ck.config.num_hidden_layers - 1);
  CHECK(out.tensors.Get("model.layers." + last + ".self_attn.v_proj.weight").entry->begin <
        out.tensors.Get("model.embed_tokens.weight").entry->begin);
}

TEST_CASE("a written layer's bytes go back to the heap", "[convert][output][shared]") {
  // Assigning an empty string to the sealed bytes kept their capacity: every replaced tensor of
  // every layer stayed in memory until the end (a 70B gqa-svd held q and o of all 80 layers).
  TempDir tmp;
  const Checkpoint ck = OpenCheckpoint(SharedPath("models/stories260K"));
  REQUIRE(std::system(("mkdir " + tmp.File("out")).c_str()) == 0);
  ModelDraft draft(ck);
  draft.OpenOutput(MakeExporter(tmp.File("out"), ck, {}));
  draft.WriteLayer(0);
  constexpr std::size_t kCount = 1 << 21;  // 8 MiB of float32
  draft.Add({TensorRole::kKScale, 1}, {static_cast<std::int64_t>(kCount)},
            std::vector<float>(kCount, 0.5f), DType::kF32);
  draft.SealLayer(1);  // the float32 copy goes, the 8 MiB to write stay
  const std::size_t sealed = HeapInUse();
  draft.WriteLayer(1);
  draft.FlushOutput();  // written on the output's thread: freed once it is done
  const std::size_t written = HeapInUse();
  INFO("heap in use: " << sealed << " bytes sealed, " << written << " written");
  CHECK(written + kCount * sizeof(float) - (1 << 20) < sealed);  // 1 MiB for other allocations
}

TEST_CASE("a tensor's generation changes whenever the values read from it may have",
          "[passes][draft][shared]") {
  TempDir tmp;
  const Checkpoint ck = OpenCheckpoint(F16Copy(tmp));  // sealing rounds to F16: values change
  ModelDraft draft(ck);
  const TensorId k{TensorRole::kKProj, 0}, v{TensorRole::kVProj, 0};
  const std::string k_name = HfTensorName(k);
  CHECK(draft.Generation(k_name) == 0);  // the source's, untouched
  std::vector<float> x = draft.ReadF32(k);
  for (float& f : x) f = f / 3;  // thirds: not representable in F16, so sealing rounds them
  draft.Replace(k, draft.Shape(k), x);
  const std::uint64_t replaced = draft.Generation(k_name);
  CHECK(replaced != 0);
  CHECK(draft.Generation(HfTensorName(v)) == 0);  // another tensor keeps its own
  draft.SealLayer(0);
  const std::uint64_t sealed = draft.Generation(k_name);
  CHECK(sealed != replaced);
  CHECK(draft.ReadF32(k) != x);  // ...because the values read did change
  draft.SealLayer(0);            // nothing left to seal: nothing changes
  CHECK(draft.Generation(k_name) == sealed);
  draft.Replace(k, draft.Shape(k), x);
  CHECK(draft.Generation(k_name) != sealed);
  CHECK(draft.Generation(k_name) != replaced);  // never a number given before
  draft.Remove(k);
  CHECK(draft.Generation(k_name) > sealed);
}

TEST_CASE("attention read into a used buffer is the attention read fresh",
          "[convert][fold][shared]") {
  // ReadAttention(model, layer, p) keeps p's buffers from the layer before: nothing of that
  // layer may remain, also where this layer has no K/V projections (an mlkv reader), and on
  // any number of threads.
  const Checkpoint ck = OpenCheckpoint(SharedPath("models/stories260K-mha"));
  ModelDraft draft(ck);
  draft.Remove({TensorRole::kKProj, 2});
  draft.Remove({TensorRole::kVProj, 2});
  auto same = [](const AttentionProjections& a, const AttentionProjections& b) {
    CHECK(a.heads == b.heads);
    CHECK(a.kv_heads == b.kv_heads);
    CHECK(a.wq == b.wq);
    CHECK(a.wk == b.wk);
    CHECK(a.wv == b.wv);
    CHECK(a.wo == b.wo);
  };
  AttentionProjections p;
  for (int threads : {1, 2, 4}) {  // the projections read side by side: the same numbers
    for (int layer : {0, 1, 2, 3, 0}) {
      ReadAttention(draft, layer, p, threads);
      INFO("layer " << layer << ", " << threads << " threads");
      same(p, ReadAttention(draft, layer));
      CHECK(p.wk.empty() == (layer == 2));
    }
  }
}

TEST_CASE("a write that fails behind the layer loop is thrown by the next call, once",
          "[convert][output][shared]") {
  const Checkpoint ck = OpenCheckpoint(SharedPath("models/stories260K"));
  std::vector<std::string> added;
  const std::string fails_on = "model.layers.1.self_attn.k_proj.weight";
  ModelDraft draft(ck);
  draft.OpenOutput(std::make_unique<RecordingExporter>(added, fails_on));
  draft.WriteLayer(0);
  draft.FlushOutput();
  const std::size_t layer0 = added.size();
  CHECK(layer0 == 9);  // two norms, four attention and three MLP matrices
  CHECK(std::is_sorted(added.begin(), added.end()));  // in name order
  draft.WriteLayer(1);                                // returns: the write runs behind
  CHECK_THROWS_WITH(draft.WriteLayer(2), "out/model.safetensors: No space left on device");
  // Layer 1 stopped at the failing tensor; layer 2 was never handed over.
  // input_layernorm, the three MLP matrices and post_attention_layernorm come before k_proj
  CHECK(added.size() == layer0 + 5);
  for (const std::string& name : added) CHECK(name.rfind("model.layers.2.", 0) != 0);
  CHECK_NOTHROW(draft.FlushOutput());  // said once
}
