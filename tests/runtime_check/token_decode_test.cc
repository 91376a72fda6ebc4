#include <catch2/catch.hpp>

#include "formats/checkpoint.h"
#include "runtime_check/reference_model.h"
#include "tests/runtime_check/runtime_test_support.h"
#include "tests/test_support.h"

using namespace kvfold;
using kvfold::test::MaxAbsDiff;
using kvfold::test::SharedPath;
using kvfold::test::SomeTokens;

// Two independent implementations of the same semantics: the batched forward (fused kernels,
// and plain ATen) and decoding one token at a time against a growing KV cache.
TEST_CASE("token-by-token decoding reproduces the batched forward", "[runtime][decode][shared]") {
  for (const char* model : {"stories260K", "mini-mha"}) {
    INFO(model);
    const Checkpoint ck = OpenCheckpoint(SharedPath(std::string("models/") + model));
    const auto ids = SomeTokens(48, static_cast<int>(ck.config.vocab_size));
    RuntimeOptions sequential;
    sequential.threads = 2;
    sequential.token_by_token = true;
    const auto decoded = ReferenceModel::Load(ck, sequential)->Logits(ids);
    CHECK(MaxAbsDiff(decoded, kvfold::test::LoadModel(ck, true)->Logits(ids)) < 1e-4);
    CHECK(MaxAbsDiff(decoded, kvfold::test::LoadModel(ck, false)->Logits(ids)) < 1e-4);
  }
}
