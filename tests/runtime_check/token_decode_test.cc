#include <catch2/catch.hpp>

#include "formats/checkpoint.h"
#include "runtime_check/reference_model.h"
#include "tests/runtime_check/runtime_test_support.h"
#include "tests/test_support.h"

using namespace kvfold;
using kvfold::test::MaxAbsDiff;
using kvfold::test::SharedPath;
using kvfold::test::SomeTokens;

// The runtime's one layer body run two ways: batched over all tokens under a causal mask (fused
// kernels, and plain ATen), and one token at a time over a growing KV cache (its own attention
// over the cache, RoPE rows at the token's position). The float64 forwards of
// architecture_test check both against transformers' math.
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
