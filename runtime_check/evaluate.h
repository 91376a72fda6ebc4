// Evaluation by the kvfold-ppl-v1 protocol: perplexity of one model over token windows, and the
// comparison of two models on the same windows (KL, top-1 agreement, delta NLL).
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "calib/windows.h"
#include "runtime_check/kv_cache_policy.h"
#include "runtime_check/reference_model.h"

namespace kvfold {

struct EvalOptions {
  int batch_windows = 0;  // windows per forward batch; 0 = WindowsPerBatch (data_parallel.h)
  bool progress = true;   // progress lines on stderr
  // Decode-time cache policy for the model under test (CompareModels: `other`; perplexity: the
  // model); null = full cache.
  const KvCachePolicy* cache = nullptr;
  // Only window positions >= scored_from count (a prefilled prefix is context, not scored).
  std::int64_t scored_from = 0;
  // Scored positions whose logits are formed at once; 0 = about 32 MiB of them.
  std::int64_t logit_chunk_rows = 0;
  // Vocabulary ids whose LM head rows are read and applied at once; 0 = about 64 MiB of them
  // (runtime_check/vocab_blocks.h: the whole head never exists in float32 when streamed).
  std::int64_t vocab_block_rows = 0;
  // Under mpirun (formats/ranks.h): each rank evaluates its share of the window groups and every
  // rank gets the totals (collective). Off: this rank evaluates every window alone.
  bool across_ranks = false;
  // EvaluatePerplexity, one rank: receives log p(target) of every scored position, window by
  // window (windows x scored positions), for comparison with another runtime.
  std::vector<float>* token_logp = nullptr;
};

struct PerplexityResult {
  int windows = 0;
  std::int64_t tokens_predicted = 0;
  double mean_nll = 0;  // natural log
  double ppl = 0;
  double accuracy = 0;  // fraction of scored positions whose argmax is the target
  double seconds = 0;   // forward + metrics
  double tokens_per_second = 0;
};

struct ComparisonResult {
  PerplexityResult base;      // the reference model ("original")
  PerplexityResult other;     // the model under test
  double kl = 0;              // mean over positions of KL(base || other), nats
  double top1_agreement = 0;  // fraction of positions whose argmax agrees
  double delta_nll = 0;       // other.mean_nll - base.mean_nll
};

// Each window w is fed as [bos] + w[0..W-2] and scored on w[scored_from..W-1]; with no BOS
// (bos < 0) it is fed as w and scored on w[max(scored_from, 1)..W-1] (calib/windows.h).
PerplexityResult EvaluatePerplexity(const ReferenceModel& model,
                                    const std::vector<TokenWindow>& windows, std::int32_t bos,
                                    const EvalOptions& options);

ComparisonResult CompareModels(const ReferenceModel& base, const ReferenceModel& other,
                               const std::vector<TokenWindow>& windows, std::int32_t bos,
                               const EvalOptions& options);

// The reference model's final residual streams over `windows`, swept once, for comparisons of
// many models against it on the same windows (the planner scores every candidate against one
// source): each then runs only the model under test. Made by SweepReference, read by
// CompareModels; refers to the reference model, which must outlive it.
class ReferenceSweep {
 public:
  struct State;
  explicit ReferenceSweep(std::unique_ptr<State> state);
  ReferenceSweep(ReferenceSweep&&) noexcept;
  ReferenceSweep& operator=(ReferenceSweep&&) noexcept;
  ~ReferenceSweep();

 private:
  std::unique_ptr<State> state_;
  friend ComparisonResult CompareModels(const ReferenceSweep& base, const ReferenceModel& other,
                                        const EvalOptions& options);
};

// With `options` as CompareModels takes them (options.cache is ignored here: the reference runs
// with its full cache).
ReferenceSweep SweepReference(const ReferenceModel& base, const std::vector<TokenWindow>& windows,
                              std::int32_t bos, const EvalOptions& options);
// The same numbers as CompareModels(base model, other, windows, bos, options) on the sweep's
// windows; `options` must score what the sweep was made with (scored_from, across_ranks, batch
// windows), else Error ("internal"). Collective under mpirun with across_ranks, like that.
ComparisonResult CompareModels(const ReferenceSweep& base, const ReferenceModel& other,
                               const EvalOptions& options);

}  // namespace kvfold
