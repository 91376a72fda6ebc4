// The layer sweep: a streamed model (one layer read at a time) gives what the resident model
// gives; statistics gathered layer by layer equal those gathered batch by batch; and metrics
// formed a chunk of rows at a time equal log-softmax over whole logits in float64.
#include <algorithm>
#include <catch2/catch.hpp>
#include <cmath>

#include "calib/kv_statistics.h"
#include "calib/text.h"
#include "calib/tokenizer.h"
#include "calib/windows.h"
#include "formats/checkpoint.h"
#include "runtime_check/evaluate.h"
#include "runtime_check/reference_model.h"
#include "tests/test_support.h"

using namespace kvfold;
using kvfold::test::SharedPath;

namespace {

struct Loaded {
  Checkpoint ck;
  std::unique_ptr<Tokenizer> tokenizer;
  std::vector<TokenWindow> windows;
};

Loaded LoadWindows(const std::string& model, int window, int count) {
  Loaded l{OpenCheckpoint(SharedPath("models/" + model)), nullptr, {}};
  l.tokenizer = Tokenizer::Load(l.ck.tokenizer_path);
  l.windows = CutWindows(l.tokenizer->Encode(LoadText(SharedPath("text/tinystories/eval.txt"))),
                         window, count, "eval");
  return l;
}

std::unique_ptr<ReferenceModel> Model(const Checkpoint& ck, bool streamed) {
  RuntimeOptions o{"cpu", 2};
  o.stream_layers = streamed;
  return ReferenceModel::Load(ck, o);
}

double RelativeDifference(double a, double b) {
  return std::abs(a - b) / std::max(std::abs(a), 1e-30);
}

double WorstRelative(const std::vector<double>& a, const std::vector<double>& b) {
  REQUIRE(a.size() == b.size());
  double scale = 0, worst = 0;
  for (double x : a) scale = std::max(scale, std::abs(x));
  for (std::size_t i = 0; i < a.size(); ++i) worst = std::max(worst, std::abs(a[i] - b[i]));
  return worst / std::max(scale, 1e-30);
}

}  // namespace

TEST_CASE("a streamed model evaluates and compares like the resident one",
          "[runtime][sweep][shared]") {
  // mini-mha-bf16-sharded: BF16 shards, so streaming converts and releases per layer.
  const Loaded l = LoadWindows("mini-mha-bf16-sharded", 64, 6);
  const auto resident = Model(l.ck, false);
  const auto streamed = Model(l.ck, true);
  EvalOptions o;
  o.progress = false;
  o.batch_windows = 4;  // two batches, the second shorter
  const PerplexityResult a = EvaluatePerplexity(*resident, l.windows, l.tokenizer->bos_id(), o);
  const PerplexityResult b = EvaluatePerplexity(*streamed, l.windows, l.tokenizer->bos_id(), o);
  // The same float32 operations on the same weights: only a BLAS kernel choice that depended on
  // where the weights live could move the result, and that would stay at float32 rounding.
  CHECK(RelativeDifference(a.mean_nll, b.mean_nll) < 1e-6);
  CHECK(a.accuracy == Approx(b.accuracy).margin(1e-9));
  CHECK(a.tokens_predicted == 6 * 64);
  const ComparisonResult c =
      CompareModels(*streamed, *resident, l.windows, l.tokenizer->bos_id(), o);
  CHECK(c.kl < 1e-6);  // the same model: KL is float32 noise
  CHECK(c.top1_agreement == 1.0);
  // Without the next layer read ahead on another thread: the same weights, the same operations.
  RuntimeOptions one_at_a_time{"cpu", 2};
  one_at_a_time.stream_layers = true;
  one_at_a_time.prefetch_layers = false;
  const PerplexityResult d = EvaluatePerplexity(*ReferenceModel::Load(l.ck, one_at_a_time),
                                                l.windows, l.tokenizer->bos_id(), o);
  CHECK(RelativeDifference(b.mean_nll, d.mean_nll) < 1e-6);
}

TEST_CASE("hidden states spilled to a file give what resident ones give",
          "[runtime][sweep][shared]") {
  const Loaded l = LoadWindows("mini-mha-bf16-sharded", 64, 6);
  EvalOptions o;
  o.progress = false;
  o.batch_windows = 4;  // two batches: 4 x 64 rows, then 2 x 64
  const std::uint64_t first_batch = 4 * 64 * l.ck.config.hidden_size * sizeof(float);
  auto run = [&](std::uint64_t budget) {
    RuntimeOptions r{"cpu", 2};
    r.stream_layers = true;
    r.hidden_state_budget_bytes = budget;
    const auto model = ReferenceModel::Load(l.ck, r);
    return CompareModels(*model, *model, l.windows, l.tokenizer->bos_id(), o);
  };
  const ComparisonResult resident = run(UINT64_MAX);
  for (const std::uint64_t budget :
       {std::uint64_t{0}, first_batch}) {  // all spilled; the second batch only
    INFO("budget " << budget);
    const ComparisonResult spilled = run(budget);
    // The spill file holds the float32 bytes themselves and the same operations run on them:
    // any difference is a lost or misplaced batch, never rounding.
    CHECK(spilled.base.mean_nll == resident.base.mean_nll);
    CHECK(spilled.other.mean_nll == resident.other.mean_nll);
    CHECK(spilled.base.tokens_predicted == 6 * 64);
    CHECK(spilled.base.accuracy == resident.base.accuracy);
  }
}

TEST_CASE("chunked, vocabulary-blocked metrics equal float64 log-softmax over whole logits",
          "[runtime][sweep][shared]") {
  const Loaded l = LoadWindows("stories260K", 32, 3);
  const auto model = Model(l.ck, true);
  const std::int32_t bos = l.tokenizer->bos_id();
  EvalOptions o;
  o.progress = false;
  o.logit_chunk_rows = 7;   // chunks that straddle windows and leave a remainder
  o.vocab_block_rows = 37;  // head rows read from the checkpoint in uneven blocks
  o.scored_from = 5;
  const PerplexityResult p = EvaluatePerplexity(*model, l.windows, bos, o);
  // Independent reference: whole [T, V] logits of each window, log-softmax in double.
  const auto resident = Model(l.ck, false);
  double nll = 0;
  std::int64_t scored = 0;
  for (const TokenWindow& w : l.windows) {
    std::vector<std::int32_t> input;
    AppendModelInput(w, bos, input);
    const std::vector<float> logits = resident->Logits(input);
    const std::size_t V = logits.size() / input.size();
    for (std::size_t t = 5; t < input.size(); ++t) {
      const float* row = logits.data() + t * V;
      const double top = *std::max_element(row, row + V);
      double sum = 0;
      for (std::size_t v = 0; v < V; ++v) sum += std::exp(double(row[v]) - top);
      nll += top + std::log(sum) - row[w[t]];
      ++scored;
    }
  }
  CHECK(p.tokens_predicted == scored);
  // float32 log-softmax against float64: relative 1e-5 covers its rounding over 512 classes.
  CHECK(RelativeDifference(nll / double(scored), p.mean_nll) < 1e-5);
}

TEST_CASE("statistics of a sweep equal those gathered batch by batch", "[runtime][sweep][shared]") {
  const Loaded l = LoadWindows("stories260K", 64, 5);
  const ModelConfig& c = l.ck.config;
  const unsigned wanted = kStatValue | kStatKeyPreRope | kStatKvRange;
  const std::vector<LayerPair> pairs = {
      {0, 2}, {1, 3}, {0, 0}};  // cross-layer moments need per-batch memory
  auto collector = [&] {
    return KvStatisticsCollector(wanted, static_cast<int>(c.num_hidden_layers),
                                 c.num_key_value_heads, c.head_dim, c.hidden_size, pairs);
  };
  std::vector<ReferenceModel::ObservedBatch> batches;
  for (std::size_t first = 0; first < l.windows.size(); first += 2) {
    ReferenceModel::ObservedBatch b;
    b.windows = static_cast<int>(std::min<std::size_t>(2, l.windows.size() - first));
    b.first_sequence = static_cast<std::int64_t>(first);
    for (std::size_t w = first; w < first + static_cast<std::size_t>(b.windows); ++w) {
      AppendModelInput(l.windows[w], l.tokenizer->bos_id(), b.tokens);
    }
    batches.push_back(b);
  }
  KvStatisticsCollector one_by_one = collector();
  const auto resident = Model(l.ck, false);
  for (const auto& b : batches) resident->Observe(b.tokens, b.windows, one_by_one);
  KvStatisticsCollector swept = collector();
  std::int64_t layers_seen = 0;
  Model(l.ck, true)->ObserveSweep(batches, {&swept}, [&](std::int64_t done) {
    layers_seen = done;
  });
  CHECK(layers_seen == c.num_hidden_layers);
  const KvStatistics& a = one_by_one.statistics();
  const KvStatistics& b = swept.statistics();
  CHECK(a.tokens == b.tokens);
  CHECK(a.windows == b.windows);
  // Each accumulator sees the same batches in the same order; 1e-12 only allows for BLAS
  // picking another kernel for the same product.
  for (std::size_t layer = 0; layer < a.layers.size(); ++layer) {
    CHECK(WorstRelative(a.layers[layer].value, b.layers[layer].value) < 1e-12);
    CHECK(WorstRelative(a.layers[layer].key_pre_rope, b.layers[layer].key_pre_rope) < 1e-12);
    CHECK(a.layers[layer].key_max == b.layers[layer].key_max);  // extremes: no arithmetic at all
  }
  for (const LayerPair& p : pairs)
    CHECK(WorstRelative(a.InputMoment(p.first, p.second), b.InputMoment(p.first, p.second)) <
          1e-12);
}
