// bench_eval_throughput: tokens/s of the reference forward (kvfold eval) and of calibration
// (kvfold convert's statistics sweep) on a model, and the GFLOP/s each achieves as a fraction of
// what sgemm reaches in the same process. Both stream the weights layer by layer, as kvfold
// does (--resident: hold them, as tests do).
//
//   build/bin/bench_eval_throughput [--model DIR] [--text FILE] [--threads N] [--windows N]
//                                   [--repeats N] [--resident 1] [--prefetch 0]
#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "calib/kv_statistics.h"
#include "calib/text.h"
#include "calib/tokenizer.h"
#include "calib/windows.h"
#include "formats/checkpoint.h"
#include "formats/error.h"
#include "formats/heap_policy.h"
#include "runtime_check/blas_core.h"
#include "runtime_check/data_parallel.h"
#include "runtime_check/evaluate.h"
#include "runtime_check/forward_flop.h"
#include "runtime_check/tensor_cache.h"

namespace {

double Seconds(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

// Best-of-`repeats` GFLOP/s of [m,k] x [k,n] through at::mm (OpenBLAS sgemm underneath).
double SgemmGflops(std::int64_t m, std::int64_t k, std::int64_t n, int repeats) {
  at::Tensor a = at::randn({m, k}), b = at::randn({k, n});
  at::mm(a, b);  // warm-up
  double best = 1e30;
  for (int r = 0; r < repeats; ++r) {
    auto t0 = std::chrono::steady_clock::now();
    at::mm(a, b);
    best = std::min(best, Seconds(t0));
  }
  return 2.0 * m * k * n / best / 1e9;
}

// FLOPs per token of the weight products: q/k/v/o projections, the SwiGLU MLP, the LM head.
double ProjectionFlopsPerToken(const kvfold::ModelConfig& c) {
  const double D = c.hidden_size, H = c.num_attention_heads, KV = c.num_key_value_heads;
  const double d = c.head_dim, I = c.intermediate_size, V = c.vocab_size, L = c.num_hidden_layers;
  return 2.0 * (L * (D * (H + 2 * KV) * d + H * d * D + 3 * D * I) + V * D);
}

// Calibration tokens/s: the sweep kvfold convert runs for gqa-svd (values, pre-RoPE keys and
// query energy collected), best of `repeats`.
double CalibrationTokensPerSecond(const kvfold::ReferenceModel& model,
                                  const std::vector<kvfold::TokenWindow>& windows, std::int32_t bos,
                                  int repeats) {
  const kvfold::ModelConfig& c = model.config();
  std::vector<kvfold::ReferenceModel::ObservedBatch> batches;
  const std::size_t per_batch = std::max<std::size_t>(1, 2048 / windows.front().size());
  for (std::size_t first = 0; first < windows.size(); first += per_batch) {
    kvfold::ReferenceModel::ObservedBatch b;
    b.windows = static_cast<int>(std::min(per_batch, windows.size() - first));
    b.first_sequence = static_cast<std::int64_t>(first);
    for (std::size_t w = first; w < first + static_cast<std::size_t>(b.windows); ++w) {
      kvfold::AppendModelInput(windows[w], bos, b.tokens);
    }
    batches.push_back(std::move(b));
  }
  double best = 0;
  for (int r = 0; r < repeats; ++r) {
    std::vector<kvfold::KvStatisticsCollector> collectors;
    std::vector<kvfold::LayerObserver*> observers;
    for (std::size_t s = 0; s < kvfold::DataParallelSlots(model); ++s) {
      collectors.emplace_back(
          kvfold::kStatValue | kvfold::kStatKeyPreRope | kvfold::kStatQueryEnergy,
          static_cast<int>(c.num_hidden_layers), c.num_key_value_heads, c.head_dim);
    }
    for (auto& col : collectors) observers.push_back(&col);
    const auto t0 = std::chrono::steady_clock::now();
    model.ObserveSweep(batches, observers, {});
    best =
        std::max(best, static_cast<double>(windows.size() * windows.front().size()) / Seconds(t0));
  }
  return best;
}

// FLOPs per token of causal attention over windows of W tokens: 2d for QK^T and again for PV per
// head and (query, key) pair, counted as the runtime counts them (runtime_check/forward_flop.h),
// so on average 2 d (W + 1) per head.
double AttentionFlopsPerToken(const kvfold::ModelConfig& c, std::int64_t window) {
  return static_cast<double>(c.num_hidden_layers) * c.num_attention_heads * 4.0 * c.head_dim *
         static_cast<double>(kvfold::CausalPairs(window, 0)) / static_cast<double>(window);
}

}  // namespace

int main(int argc, char** argv) {
  kvfold::EnsureFastBlasCore(argv);
  kvfold::SetHeapPolicy();  // as kvfold runs (tools/kvfold_main.cc)
  kvfold::InstallTensorCache();
  std::string shared = KVFOLD_SHARED_DIR;
  std::string model = shared + "/models/mini-mha";
  std::string text = shared + "/text/wikitext-2/test.raw.txt";
  int threads = 2, windows = 64, repeats = 3;
  bool resident = false;
  bool prefetch = true;
  for (int i = 1; i + 1 < argc; i += 2) {
    if (!std::strcmp(argv[i], "--model"))
      model = argv[i + 1];
    else if (!std::strcmp(argv[i], "--text"))
      text = argv[i + 1];
    else if (!std::strcmp(argv[i], "--threads"))
      threads = std::atoi(argv[i + 1]);
    else if (!std::strcmp(argv[i], "--windows"))
      windows = std::atoi(argv[i + 1]);
    else if (!std::strcmp(argv[i], "--repeats"))
      repeats = std::atoi(argv[i + 1]);
    else if (!std::strcmp(argv[i], "--resident"))
      resident = std::atoi(argv[i + 1]) != 0;
    else if (!std::strcmp(argv[i], "--prefetch"))
      prefetch = std::atoi(argv[i + 1]) != 0;
    else {
      std::fprintf(stderr, "unknown option %s\n", argv[i]);
      return 2;
    }
  }
  try {
    at::set_num_threads(threads);
    const kvfold::Checkpoint ck = kvfold::OpenCheckpoint(model);
    const auto tok = kvfold::Tokenizer::Load(ck.tokenizer_path);
    const auto t_tok = std::chrono::steady_clock::now();
    const auto tokens = tok->Encode(kvfold::LoadText(text));
    const double tokenize_s = Seconds(t_tok);
    const auto wins = kvfold::CutWindows(tokens, 256, windows, text);
    kvfold::RuntimeOptions runtime{"cpu", threads};
    runtime.stream_layers = !resident;
    runtime.prefetch_layers = prefetch;
    const auto ref = kvfold::ReferenceModel::Load(ck, runtime);

    kvfold::EvalOptions opts;
    opts.progress = false;
    kvfold::EvaluatePerplexity(*ref, {wins.begin(), wins.begin() + 1}, tok->bos_id(),
                               opts);  // warm-up
    kvfold::PerplexityResult best;
    for (int r = 0; r < repeats; ++r) {
      auto res = kvfold::EvaluatePerplexity(*ref, wins, tok->bos_id(), opts);
      if (r == 0 || res.tokens_per_second > best.tokens_per_second) best = res;
    }
    const double calib_tokens_per_second =
        CalibrationTokensPerSecond(*ref, wins, tok->bos_id(), repeats);
    const double projection_flops = ProjectionFlopsPerToken(ck.config);
    const double flops = projection_flops + AttentionFlopsPerToken(ck.config, 256);
    const double head_flops =
        2.0 * ck.config.vocab_size * ck.config.hidden_size;  // calibration has no LM head
    const double D = ck.config.hidden_size;
    const double sgemm = SgemmGflops(2048, 2048, 2048, 5);
    std::printf("| quantity | value |\n|---|---|\n");
    std::printf("| model | %s (%s) |\n| threads | %d |\n", model.c_str(),
                resident   ? "resident"
                : prefetch ? "streamed, next layer prefetched"
                           : "streamed",
                threads);
    std::printf("| BLAS | %s |\n", kvfold::BlasDescription().c_str());
    std::printf("| tokens evaluated (best of %d) | %lld |\n", repeats,
                static_cast<long long>(best.tokens_predicted));
    std::printf("| eval throughput | %.0f tokens/s |\n", best.tokens_per_second);
    std::printf(
        "| forward cost | %.2f MFLOP/token (%.2f weight products + %.2f causal attention) |\n",
        flops / 1e6, projection_flops / 1e6, (flops - projection_flops) / 1e6);
    std::printf("| forward achieved | %.1f GFLOP/s (%.0f%% of sgemm) |\n",
                flops * best.tokens_per_second / 1e9,
                100 * flops * best.tokens_per_second / 1e9 / sgemm);
    std::printf("| calibration throughput | %.0f tokens/s |\n", calib_tokens_per_second);
    std::printf("| calibration achieved | %.1f GFLOP/s at %.2f MFLOP/token (%.0f%% of sgemm) |\n",
                (flops - head_flops) * calib_tokens_per_second / 1e9, (flops - head_flops) / 1e6,
                100 * (flops - head_flops) * calib_tokens_per_second / 1e9 / sgemm);
    std::printf("| sgemm 2048x2048x2048 | %.1f GFLOP/s |\n", sgemm);
    std::printf("| sgemm 4096x%.0fx%.0f (a projection's shape) | %.1f GFLOP/s |\n", D, D,
                SgemmGflops(4096, static_cast<std::int64_t>(D), static_cast<std::int64_t>(D), 10));
    std::printf("| tokenize whole text | %.2f s for %zu tokens |\n", tokenize_s, tokens.size());
    std::printf("| ppl (sanity) | %.4f |\n", best.ppl);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench_eval_throughput: %s\n", e.what());
    return 1;
  }
  return 0;
}
