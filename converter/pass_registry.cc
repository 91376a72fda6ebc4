// The registry: every pass kvfold has, with its parameters. Adding a pass = a header, a source
// file, one entry here, one test.
#include "converter/gqa_passes.h"
#include "converter/norm_analysis_pass.h"
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
      {"kv-norm-analysis",
       "Key L2 norm vs attention per layer/KV head (arXiv 2406.11430); writes the eviction policy "
       "table kv_eviction_policy.json/.safetensors beside the model. Runs alone",
       {{"budget", "attention mass a head may lose at its recommended keep ratio (default 0.1)"},
        {"max-alr-ratio", "exempt a head when its ALR exceeds this times a random order's "
                          "(default 0.5)"}},
       &CreateNormAnalysis},
  };
  return registry;
}

}  // namespace kvfold
