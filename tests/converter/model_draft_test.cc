#include <catch2/catch.hpp>

#include <string>
#include <vector>

#include "converter/model_draft.h"
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

}  // namespace

TEST_CASE("a replaced tensor that its dtype cannot hold is refused, naming it", "[convert][output][shared]") {
  TempDir tmp;
  const Checkpoint ck = OpenCheckpoint(F16Copy(tmp));
  const std::string name = "model.layers.2.self_attn.k_proj.weight";
  ModelDraft draft(ck);
  std::vector<float> w = draft.ReadF32(name);
  w[5] = 1e6f;  // a decode coefficient far beyond F16's 65504
  draft.Replace(name, draft.Shape(name), w);
  REQUIRE(std::system(("mkdir " + tmp.File("out")).c_str()) == 0);
  CHECK_THROWS_WITH(draft.WriteTo(tmp.File("out")),
                    name + ": cannot be written as F16: element 5 is 1000000.000000 (beyond F16's range of 65504)");
  w[5] = 60000.0f;  // large but representable
  draft.Replace(name, draft.Shape(name), w);
  CHECK_NOTHROW(draft.WriteTo(tmp.File("out")));
}
