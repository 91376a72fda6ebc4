// `--kv-cache SPEC`: the decode-time cache policy a spec names, built for one checkpoint.
//   evict<...>  runtime_check/kv_eviction.h (policy=table reads MODEL/kv_eviction_policy.json)
//   quant<...>  runtime_check/kv_quant.h (fp8 reads the checkpoint's k_scale/v_scale tensors,
//               mikv with table=... reads a kv-mixed table)
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "formats/checkpoint.h"
#include "runtime_check/kv_cache_policy.h"

namespace kvfold {

struct CachePolicySpec {
  std::unique_ptr<KvCachePolicy> policy;
  std::string text;  // canonical spec text
  // First scored window position: a policy is judged on the tokens after the prefix (W/2 unless
  // an eviction spec sets prefix=), where both regimes and every scheme hold a compressed cache.
  std::int64_t scored_from = 0;
};

// Throws Error("--kv-cache: ...") for a bad spec, or naming the file a policy needs.
CachePolicySpec MakeCachePolicy(const std::string& spec, const Checkpoint& checkpoint,
                                std::int64_t window);

}  // namespace kvfold
