// Phi-3's stored layout: fused qkv_proj / gate_up_proj and partial-rotary heads, read as kvfold's
// role tensors in its channel order and written back byte for byte.
#include "formats/stored_layout.h"

#include <catch2/catch.hpp>
#include <numeric>

#include "formats/error.h"
#include "formats/safetensors_writer.h"
#include "tests/test_support.h"

using namespace kvfold;

namespace {

ModelConfig Phi(std::int64_t head_dim, std::int64_t rotary_dim) {
  ModelConfig c;
  c.model_type = "phi3";
  c.hidden_size = 4;
  c.num_hidden_layers = 1;
  c.num_attention_heads = 2;
  c.num_key_value_heads = 1;
  c.head_dim = head_dim;
  c.rotary_dim = rotary_dim;
  c.intermediate_size = 3;
  c.fused_qkv = c.fused_gate_up = true;
  return c;
}

std::string Bytes(const std::vector<float>& v) {
  return std::string(reinterpret_cast<const char*>(v.data()), v.size() * sizeof(float));
}

// Row r of a [rows, 4] tensor holds r in every column.
std::vector<float> Rows(std::int64_t rows) {
  std::vector<float> v;
  for (std::int64_t r = 0; r < rows; ++r) v.insert(v.end(), 4, static_cast<float>(r));
  return v;
}

}  // namespace

TEST_CASE("partial rotary: rotary pair j is (j, j + d/2) in kvfold's order", "[stored_layout]") {
  // d 8, 6 rotated: stored [r0 r1 r2 | r3 r4 r5 | p0 p1]; pairs (0,3) (1,4) (2,5), pass p0 p1.
  CHECK(HeadChannelOrder(Phi(8, 6)) == std::vector<std::int64_t>{0, 1, 2, 6, 3, 4, 5, 7});
  CHECK(HeadChannelOrder(Phi(8, 8)).empty());
  const std::vector<std::int64_t> order = HeadChannelOrder(Phi(128, 96));
  std::vector<std::int64_t> sorted = order;
  std::sort(sorted.begin(), sorted.end());
  std::vector<std::int64_t> all(128);
  std::iota(all.begin(), all.end(), 0);
  CHECK(sorted == all);                                                // a permutation
  for (int j = 0; j < 48; ++j) CHECK(order[j + 64] - order[j] == 48);  // RoPE's pairs
  CHECK(ChannelsAsKvfold(Phi(8, 6), ChannelsAsStored(Phi(8, 6), {0, 1, 2, 3, 4, 5, 6, 7})) ==
        std::vector<float>{0, 1, 2, 3, 4, 5, 6, 7});
  CHECK(ChannelsAsStored(Phi(8, 6), {0, 1, 2, 3, 4, 5, 6, 7}) ==
        std::vector<float>{0, 1, 2, 4, 5, 6, 3, 7});
}

TEST_CASE("fused tensors read as role views and are written back as stored", "[stored_layout]") {
  const ModelConfig c = Phi(8, 6);  // q 16 rows, k 8, v 8; gate 3, up 3
  test::TempDir tmp;
  const std::vector<float> qkv = Rows(32), gate_up = Rows(6);
  WriteSafetensors(tmp.File("model.safetensors"),
                   {{FusedQkvName(0), DType::kF32, {32, 4}, Bytes(qkv)},
                    {FusedGateUpName(0), DType::kF32, {6, 4}, Bytes(gate_up)}},
                   {});
  TensorStore store = TensorStore::OpenFile(tmp.File("model.safetensors"));
  MapStoredLayout(c, store);
  CHECK(store.Find(FusedQkvName(0)) == nullptr);
  const std::vector<float> q = store.ReadF32(HfTensorName({TensorRole::kQProj, 0}));
  const std::vector<float> k = store.ReadF32(HfTensorName({TensorRole::kKProj, 0}));
  const std::vector<float> v = store.ReadF32(HfTensorName({TensorRole::kVProj, 0}));
  const std::vector<float> up = store.ReadF32(HfTensorName({TensorRole::kUpProj, 0}));
  CHECK(q[3 * 4] == 6);         // head 0, kvfold channel 3 = stored channel 6
  CHECK(q[(8 + 3) * 4] == 14);  // head 1
  CHECK(k[4 * 4] == 16 + 3);    // k starts at stored row 16
  CHECK(v[0] == 24);            // v: no reordering
  CHECK(up[0] == 3);

  std::map<std::string, std::string> written;
  StoredLayoutWriter writer(c, [&](const TensorToWrite& t) { written[t.name] = t.bytes; });
  for (TensorRole r : {TensorRole::kKProj, TensorRole::kOProj, TensorRole::kQProj,
                       TensorRole::kVProj, TensorRole::kGateProj, TensorRole::kUpProj}) {
    const std::string name = HfTensorName({r, 0});
    const TensorRef* ref = store.Find(name);
    const std::string bytes = ref ? OrderedBytes(*ref) : Bytes(Rows(4));
    const std::vector<std::int64_t> shape =
        ref ? ref->entry->shape : std::vector<std::int64_t>{4, 4};
    writer.Add(TensorId{r, 0}, {name, DType::kF32, shape, bytes});
    if (r == TensorRole::kQProj) CHECK(written.count(FusedQkvName(0)) == 0);  // v still to come
  }
  writer.Finish();
  CHECK(written.size() == 3);  // qkv_proj, o_proj, gate_up_proj
  CHECK(written[FusedQkvName(0)] == Bytes(qkv));
  CHECK(written[FusedGateUpName(0)] == Bytes(gate_up));

  StoredLayoutWriter partial(c, [](const TensorToWrite&) {});
  partial.Add(TensorId{TensorRole::kQProj, 0}, {"q", DType::kF32, {16, 4}, Bytes(Rows(16))});
  CHECK_THROWS_WITH(partial.Finish(), Catch::Contains("written without all of its parts"));
}

TEST_CASE("a fused tensor of the wrong size or missing is named", "[stored_layout][hostile]") {
  const ModelConfig c = Phi(8, 6);
  test::TempDir tmp;
  WriteSafetensors(tmp.File("model.safetensors"),
                   {{FusedQkvName(0), DType::kF32, {30, 4}, Bytes(Rows(30))}}, {});
  TensorStore store = TensorStore::OpenFile(tmp.File("model.safetensors"));
  CHECK_THROWS_WITH(MapStoredLayout(c, store),
                    Catch::Contains("qkv_proj.weight' has 30 rows; the config implies 32"));
  WriteSafetensors(
      tmp.File("other.safetensors"),
      {{"model.layers.0.self_attn.q_proj.weight", DType::kF32, {16, 4}, Bytes(Rows(16))}}, {});
  TensorStore separate = TensorStore::OpenFile(tmp.File("other.safetensors"));
  CHECK_THROWS_WITH(MapStoredLayout(c, separate),
                    Catch::Contains("missing model.layers.0.self_attn.qkv_proj.weight"));
}
