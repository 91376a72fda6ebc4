// bench_eviction_sweep: decode-time KV eviction on one model (issue 6). For each policy, regime
// and keep ratio 0.9 ... 0.1: perplexity on the positions after the prefix (W/2 of W = 256) and
// KL to the full cache, over the first N windows of the evaluation text; next-token accuracy on
// the repeat of the copy check (scored after the same prefix of W/2); and the key-norm-vs-attention
// measures of kv-norm-analysis over the calibration text, which say why a policy wins or loses.
// Prints markdown.
//
//   build/bin/bench_eviction_sweep MODEL EVAL_TEXT CALIB_TEXT [--windows 32] [--copy 16]
//                                  [--calib-windows 32] [--threads 2] [--analysis-only]
//
// --analysis-only prints just the diagnostics: the kv-norm-analysis summary, Spearman against
// the attention per visible query (BOS excluded, so neither position nor a sink drives it), and
// whether the model copies at all (random runs, and the first half of real windows repeated).
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <string>
#include <vector>

#include "calib/kv_statistics.h"
#include "calib/norm_attention.h"
#include "calib/text.h"
#include "calib/tokenizer.h"
#include "calib/windows.h"
#include "converter/passes/norm_analysis_pass.h"
#include "formats/checkpoint.h"
#include "formats/error.h"
#include "runtime_check/evaluate.h"
#include "runtime_check/kv_eviction.h"

using namespace kvfold;

namespace {

constexpr int kWindow = 256;

struct Args {
  std::string model, eval_text, calib_text;
  int windows = 32, copy = 16, calib_windows = 32, threads = 2;
  bool analysis_only = false;
};

Args Parse(int argc, char** argv) {
  Args a;
  std::vector<std::string> positional;
  for (int i = 1; i < argc; ++i) {
    auto next = [&]() { return i + 1 < argc ? std::atoi(argv[++i]) : 0; };
    if (!std::strcmp(argv[i], "--windows"))
      a.windows = next();
    else if (!std::strcmp(argv[i], "--copy"))
      a.copy = next();
    else if (!std::strcmp(argv[i], "--calib-windows"))
      a.calib_windows = next();
    else if (!std::strcmp(argv[i], "--threads"))
      a.threads = next();
    else if (!std::strcmp(argv[i], "--analysis-only"))
      a.analysis_only = true;
    else
      positional.push_back(argv[i]);
  }
  if (positional.size() != 3) {
    std::fprintf(stderr,
                 "usage: bench_eviction_sweep MODEL EVAL_TEXT CALIB_TEXT [--windows N] [--copy N] "
                 "[--calib-windows N] [--threads N]\n");
    std::exit(2);
  }
  a.model = positional[0];
  a.eval_text = positional[1];
  a.calib_text = positional[2];
  return a;
}

struct Policy {
  const char* label;
  const char* spec;  // evict<...> without keep and regime
};
const Policy kPolicies[] = {
    {"l2-low", "policy=l2-low"},
    {"l2-low skip 0,1", "policy=l2-low,skip=0,1"},
    {"l2-high", "policy=l2-high"},
    {"random", "policy=random"},
    {"recent", "policy=recent"},
    {"attention-oracle", "policy=attention-oracle"},
    {"oracle score=mean", "policy=attention-oracle,score=mean"},
};

// The kv-norm-analysis measures, averaged over all heads.
void PrintNormSummary(const ReferenceModel& model, const Checkpoint& ck, const Tokenizer& tok,
                      const Args& a) {
  const auto windows =
      CutWindows(tok.Encode(LoadText(a.calib_text)), kWindow, a.calib_windows, a.calib_text);
  KvStatisticsCollector collector(kStatNormAttention, static_cast<int>(ck.config.num_hidden_layers),
                                  ck.config.num_key_value_heads, ck.config.head_dim);
  collector.SetScoreRules(ScoreRulesOf(ck.config));
  for (const auto& w : windows) {
    std::vector<std::int32_t> in;
    AppendModelInput(w, tok.bos_id(), in);
    model.Observe(in, 1, collector);
  }
  const EvictionTable t = BuildEvictionTable(collector.statistics(), 0.1, 0.5, kWindow);
  double rho = 0, ratio = 0, sink = 0;
  int negative = 0, better_than_random = 0;
  for (const auto& h : t.heads) {
    rho += h.spearman;
    ratio += h.alr / h.alr_random;
    sink += h.sink_share;
    negative += h.spearman < 0;
    better_than_random += h.alr < h.alr_random;
  }
  const double n = static_cast<double>(t.heads.size());
  std::printf(
      "kv-norm-analysis over %zu calibration windows, %zu heads: mean Spearman(key norm, "
      "attention) "
      "%+.3f (%d heads negative, as the paper expects); mean ALR / ALR(random) %.2f (%d heads "
      "where "
      "the L2 order beats random); mean attention share of the first token %.3f.\n\n",
      windows.size(), t.heads.size(), rho / n, negative, ratio / n, better_than_random, sink / n);
}

// Mean over windows and heads of Spearman(key norm, attention per visible query), BOS excluded.
class PositionFreeSpearman : public LayerObserver {
 public:
  unsigned Wants(int) const override { return kCaptureQueryPostRope | kCaptureKeyPostRope; }
  void Observe(const AttentionCapture& c) override {
    const FloatView &q = c.query_post_rope, &k = c.key_post_rope;
    const std::int64_t B = k.shape[0], T = k.shape[1], KV = k.shape[2], d = k.shape[3],
                       H = q.shape[2];
    for (std::int64_t b = 0; b < B; ++b) {
      for (std::int64_t g = 0; g < KV; ++g) {
        NormAttentionInput in{T,      d,
                              H / KV, k.data + b * T * KV * d + g * d,
                              KV * d, q.data + b * T * H * d + g * (H / KV) * d,
                              H * d,  ScoreRule{}};
        const std::vector<double> received = AttentionReceived(in);
        std::vector<double> norm, per_query;
        for (std::int64_t j = 1; j < T; ++j) {
          double s = 0;
          for (std::int64_t ch = 0; ch < d; ++ch)
            s += double(in.keys[j * in.key_stride + ch]) * in.keys[j * in.key_stride + ch];
          norm.push_back(std::sqrt(s));
          per_query.push_back(received[static_cast<std::size_t>(j)] / static_cast<double>(T - j));
        }
        sum += Spearman(norm, per_query);
        ++count;
      }
    }
  }
  double mean() const { return count ? sum / count : 0.0; }

 private:
  double sum = 0;
  std::int64_t count = 0;
};

// Full-cache accuracy on the second copy of repeated runs, next to the first copy's (W/2 tokens
// each): random ids, and the first half of real evaluation windows.
void PrintCopyDiagnostics(const ReferenceModel& model, const Checkpoint& ck, const Tokenizer& tok,
                          const Args& a, const std::vector<TokenWindow>& windows) {
  std::vector<TokenWindow> text_copy;
  for (const auto& w : windows) {
    TokenWindow r(w.begin(), w.begin() + kWindow / 2);
    r.insert(r.end(), w.begin(), w.begin() + kWindow / 2);
    text_copy.push_back(r);
  }
  EvalOptions o;
  o.progress = false;
  auto accuracy = [&](const std::vector<TokenWindow>& ws, std::int64_t from) {
    o.scored_from = from;
    return EvaluatePerplexity(model, ws, tok.bos_id(), o).accuracy;
  };
  const auto random = CopyTaskWindows(a.copy, kWindow, static_cast<int>(ck.config.vocab_size), 0);
  // First copy: positions 1..W/2-1 (position 0 follows BOS alone); second: W/2+1..W-1.
  std::vector<TokenWindow> first_half;
  for (const auto& w : text_copy)
    first_half.push_back(TokenWindow(w.begin(), w.begin() + kWindow / 2));
  std::printf(
      "Copy diagnostics (full cache): random runs, second copy %.2f%%; real text, first copy "
      "%.2f%%, "
      "second copy %.2f%%.\n\n",
      100 * accuracy(random, CopyTaskScoredFrom(kWindow)), 100 * accuracy(first_half, 1),
      100 * accuracy(text_copy, CopyTaskScoredFrom(kWindow)));
}

}  // namespace

int main(int argc, char** argv) {
  try {
    const Args a = Parse(argc, argv);
    const Checkpoint ck = OpenCheckpoint(a.model);
    const auto tok = Tokenizer::Load(ck.tokenizer_path);
    const auto model = ReferenceModel::Load(ck, {"cpu", a.threads});
    const auto windows =
        CutWindows(tok->Encode(LoadText(a.eval_text)), kWindow, a.windows, a.eval_text);
    const auto copy = CopyTaskWindows(a.copy, kWindow, static_cast<int>(ck.config.vocab_size), 0);
    const std::int32_t bos = tok->bos_id();

    std::printf("### %s\n\n", a.model.c_str());
    PrintNormSummary(*model, ck, *tok, a);
    if (a.analysis_only) {
      PositionFreeSpearman spearman;
      const auto calib =
          CutWindows(tok->Encode(LoadText(a.calib_text)), kWindow, a.calib_windows, a.calib_text);
      for (const auto& w : calib) {
        std::vector<std::int32_t> in;
        AppendModelInput(w, bos, in);
        model->Observe(in, 1, spearman);
      }
      std::printf(
          "Spearman(key norm, attention per visible query), BOS excluded: mean %+.3f over heads "
          "and windows.\n\n",
          spearman.mean());
      PrintCopyDiagnostics(*model, ck, *tok, a, windows);
      return 0;
    }

    EvalOptions text_options;
    text_options.progress = false;
    text_options.scored_from = kWindow / 2;
    EvalOptions copy_options = text_options;
    copy_options.scored_from = CopyTaskScoredFrom(kWindow);
    const PerplexityResult full = EvaluatePerplexity(*model, windows, bos, text_options);
    const PerplexityResult full_copy = EvaluatePerplexity(*model, copy, bos, copy_options);
    std::printf(
        "Full cache: ppl %.4f on positions %d..%d of %zu windows of %s; copy accuracy %.2f%% on %d "
        "sequences.\n\n",
        full.ppl, kWindow / 2, kWindow - 1, windows.size(), a.eval_text.c_str(),
        100 * full_copy.accuracy, a.copy);

    const std::vector<double> keeps = {0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2, 0.1};
    double best_copy = 0;
    for (const char* regime : {"prefill", "stream"}) {
      std::printf("%s regime: ppl / KL to the full cache (nats/token) / copy accuracy\n\n| keep |",
                  regime);
      for (const auto& p : kPolicies) std::printf(" %s |", p.label);
      std::printf("\n|---|");
      for (std::size_t i = 0; i < std::size(kPolicies); ++i) std::printf("---|");
      std::printf("\n");
      for (double keep : keeps) {
        std::printf("| %.1f |", keep);
        std::map<std::string, double> ppl;
        for (const auto& p : kPolicies) {
          char spec[160];
          std::snprintf(spec, sizeof spec, "evict<%s,regime=%s,keep=%g>", p.spec, regime, keep);
          const EvictionCachePolicy policy(ParseEvictionSpec(spec), ck.config);
          EvalOptions o = text_options;
          o.cache = &policy;
          const ComparisonResult c = CompareModels(*model, *model, windows, bos, o);
          o.scored_from = copy_options.scored_from;
          const double copy_accuracy = EvaluatePerplexity(*model, copy, bos, o).accuracy;
          best_copy = std::max(best_copy, copy_accuracy);
          std::printf(" %.2f / %.3f / %.1f%% |", c.other.ppl, c.kl, 100 * copy_accuracy);
          std::fflush(stdout);
        }
        std::printf("\n");
      }
      std::printf("\n");
    }
    std::printf(
        "Copy check: the best accuracy of any policy, regime and keep ratio above is %.2f%% "
        "(full cache %.2f%%).\n\n",
        100 * best_copy, 100 * full_copy.accuracy);
  } catch (const Error& e) {
    std::fprintf(stderr, "bench_eviction_sweep: error: %s\n", e.what());
    return 1;
  }
  return 0;
}
