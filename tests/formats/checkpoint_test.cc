#include "formats/checkpoint.h"

#include <catch2/catch.hpp>

#include "formats/error.h"
#include "formats/mapped_file.h"
#include "formats/safetensors_writer.h"
#include "tests/test_support.h"

using namespace kvfold;
using kvfold::test::SharedPath;
using kvfold::test::TempDir;

TEST_CASE("every shared checkpoint opens and validates", "[checkpoint][shared]") {
  for (const char* m :
       {"stories260K", "stories260K-mha", "micro-mha", "mini-mha", "mini-mha-bf16-sharded"}) {
    INFO(m);
    const Checkpoint ck = OpenCheckpoint(SharedPath(std::string("models/") + m));
    CHECK_FALSE(ck.tokenizer_path.empty());
    CHECK(ck.Tensor({TensorRole::kVProj, 0}).entry->shape[0] ==
          ck.config.num_key_value_heads * ck.config.head_dim);
  }
  const Checkpoint bf16 = OpenCheckpoint(SharedPath("models/mini-mha-bf16-sharded"));
  CHECK(bf16.StoredElementBytes() == 2);
}

TEST_CASE("a checkpoint whose tensors contradict its config lists the problems", "[checkpoint]") {
  TempDir dir;
  // stories260K's config with a k_proj of the wrong shape and no layer-4 MLP.
  const std::string src = SharedPath("models/stories260K");
  test::WriteBytes(dir.File("config.json"), ReadFileToString(src + "/config.json"));
  const Checkpoint good = OpenCheckpoint(src);
  std::vector<std::string> blobs;
  std::vector<TensorToWrite> tensors;
  for (const auto& [name, ref] : good.tensors.tensors()) {
    if (name.rfind("model.layers.4.mlp.", 0) == 0) continue;
    auto shape = ref.entry->shape;
    std::string bytes(ref.bytes());
    if (name == "model.layers.1.self_attn.k_proj.weight") {
      shape = {shape[0] / 2, shape[1]};
      bytes.resize(bytes.size() / 2);
    }
    blobs.push_back(bytes);
    tensors.push_back({name, ref.entry->dtype, shape, {}});
  }
  for (std::size_t i = 0; i < tensors.size(); ++i) tensors[i].bytes = blobs[i];
  WriteSafetensors(dir.File("model.safetensors"), tensors);
  try {
    OpenCheckpoint(dir.path());
    FAIL("accepted a broken checkpoint");
  } catch (const Error& e) {
    const std::string msg = e.what();
    INFO(msg);
    CHECK(msg.find("4 tensor problem(s)") != std::string::npos);
    CHECK(
        msg.find(
            "model.layers.1.self_attn.k_proj.weight has shape [16, 64], config implies [32, 64]") !=
        std::string::npos);
    CHECK(msg.find("missing model.layers.4.mlp.down_proj.weight") != std::string::npos);
  }
}
