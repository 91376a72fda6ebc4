// bench_kv_cache_sweep: decode-time KV-cache policies against the full cache of one original
// model. Each (model folder, --kv-cache spec) pair is evaluated on the first N windows of the
// text (W = 256, positions 128..255 scored, as kvfold eval does) and printed as one JSON line:
// spec, mean bits per KV element (scales counted), ppl, KL to the original's full cache, top-1.
// The folders may be the original or conversions of it with the same weights semantics (e.g.
// kv-scales or kv-balance outputs). SPEC "full" is the folder's own full cache, scored on the same
// positions (the KL of a conversion alone).
//
//   build/bin/bench_kv_cache_sweep ORIGINAL TEXT [--windows 32] [--threads 2] DIR SPEC [DIR SPEC
//   ...]
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "calib/text.h"
#include "calib/tokenizer.h"
#include "calib/windows.h"
#include "formats/checkpoint.h"
#include "formats/error.h"
#include "runtime_check/cache_policy_spec.h"
#include "runtime_check/evaluate.h"

using namespace kvfold;

int main(int argc, char** argv) {
  constexpr int kWindow = 256;
  int windows_wanted = 32, threads = 2;
  std::vector<std::string> rest;
  for (int i = 1; i < argc; ++i) {
    if (!std::strcmp(argv[i], "--windows") && i + 1 < argc)
      windows_wanted = std::atoi(argv[++i]);
    else if (!std::strcmp(argv[i], "--threads") && i + 1 < argc)
      threads = std::atoi(argv[++i]);
    else
      rest.push_back(argv[i]);
  }
  if (rest.size() < 4 || rest.size() % 2 != 0) {
    std::fprintf(stderr,
                 "usage: bench_kv_cache_sweep ORIGINAL TEXT [--windows N] [--threads N] DIR SPEC "
                 "[DIR SPEC ...]\n");
    return 2;
  }
  try {
    const Checkpoint original_ck = OpenCheckpoint(rest[0]);
    const auto tok = Tokenizer::Load(original_ck.tokenizer_path);
    const auto windows =
        CutWindows(tok->Encode(LoadText(rest[1])), kWindow, windows_wanted, rest[1]);
    const auto original = ReferenceModel::Load(original_ck, {"cpu", threads});
    std::map<std::string, std::pair<std::unique_ptr<Checkpoint>, std::unique_ptr<ReferenceModel>>>
        loaded;
    for (std::size_t i = 2; i < rest.size(); i += 2) {
      const std::string& dir = rest[i];
      auto& slot = loaded[dir];
      if (!slot.second) {
        slot.first = std::make_unique<Checkpoint>(OpenCheckpoint(dir));
        slot.second = ReferenceModel::Load(*slot.first, {"cpu", threads});
      }
      // "full": the model's own full cache, scored on the same positions as a policy would be.
      const bool full = rest[i + 1] == "full";
      const CachePolicySpec policy =
          full ? CachePolicySpec{} : MakeCachePolicy(rest[i + 1], *slot.first, kWindow);
      EvalOptions o;
      o.progress = false;
      o.cache = policy.policy.get();
      o.scored_from = full ? kWindow / 2 : policy.scored_from;
      const ComparisonResult c = CompareModels(*original, *slot.second, windows, tok->bos_id(), o);
      const nlohmann::ordered_json row = {
          {"model", dir},
          {"spec", full ? "full" : policy.text},
          {"bits", full ? 16.0
                        : policy.policy->AverageBits(kWindow, policy.scored_from,
                                                     slot.first->config.head_dim)},
          {"ppl", c.other.ppl},
          {"full_cache_ppl", c.base.ppl},
          {"kl", c.kl},
          {"top1", c.top1_agreement},
      };
      std::printf("%s\n", row.dump().c_str());
      std::fflush(stdout);
    }
  } catch (const Error& e) {
    std::fprintf(stderr, "bench_kv_cache_sweep: error: %s\n", e.what());
    return 1;
  }
  return 0;
}
