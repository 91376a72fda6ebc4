// The registry: every pass kvfold has, with its parameters. Adding a pass = a header, a source
// file, one entry here, one test.
#include "converter/gqa_passes.h"
#include "converter/pass.h"

namespace kvfold {

const std::vector<PassInfo>& PassRegistry() {
  static const std::vector<PassInfo> registry = {
      {"gqa-meanpool",
       "KV heads -> fewer KV heads by averaging each group's K/V projections (uptraining baseline)",
       {{"kv-heads", "target number of KV heads; must divide the current number (required)"}},
       &CreateGqaMeanpool},
      {"gqa-svd",
       "KV heads -> fewer KV heads by per-group PCA of calibration K/V, folded into the weights",
       {{"kv-heads", "target number of KV heads; must divide the current number (required)"},
        {"rope", "commute (default: vanilla GQA output) | reconstruct (post-RoPE key PCA; needs "
                 "kvfold's runtime)"},
        {"weight", "query (default: weight key errors by the query energy reading them, i.e. the "
                   "expected score error) | none (plain key energy, the paper's objective)"}},
       &CreateGqaSvd},
  };
  return registry;
}

}  // namespace kvfold
