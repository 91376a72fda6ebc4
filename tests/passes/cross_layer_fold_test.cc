#include "converter/passes/cross_layer_fold.h"

#include <catch2/catch.hpp>
#include <cmath>
#include <random>

#include "tests/passes/random_layer.h"

using namespace kvfold;
using kvfold::test::RandomLayer;

namespace {

// y = W x for W [rows, cols] row-major.
std::vector<double> Apply(const std::vector<double>& w, const std::vector<double>& x) {
  const std::size_t cols = x.size(), rows = w.size() / cols;
  std::vector<double> y(rows, 0.0);
  for (std::size_t r = 0; r < rows; ++r) {
    for (std::size_t c = 0; c < cols; ++c) y[r] += w[r * cols + c] * x[c];
  }
  return y;
}

// sum over samples of [h; 1][h; 1]^T.
std::vector<double> InputMoment(const std::vector<std::vector<double>>& samples) {
  const std::size_t W = samples.front().size() + 1;
  std::vector<double> m(W * W, 0.0);
  for (auto h : samples) {
    h.push_back(1.0);
    for (std::size_t i = 0; i < W; ++i) {
      for (std::size_t j = 0; j < W; ++j) m[i * W + j] += h[i] * h[j];
    }
  }
  return m;
}

struct Setup {
  std::vector<AttentionProjections> layers;  // [0] = source
  std::vector<std::vector<double>> samples;
};

// A source layer and one reader whose keys are the source's times a complex scalar per (head,
// rotary pair) and whose values are a d x d mix of the source's per head: its K/V lie exactly
// in what one shared K/V can carry. `off_span` adds an independent key direction instead.
Setup MakeSetup(bool off_span) {
  std::mt19937 rng(7);
  std::normal_distribution<double> n01;
  const std::int64_t H = 4, KV = 2, d = 4, D = 12, half = d / 2;
  Setup s;
  s.layers.push_back(RandomLayer(H, KV, d, D, rng));
  AttentionProjections reader = RandomLayer(H, KV, d, D, rng);
  const AttentionProjections& src = s.layers[0];
  for (std::int64_t g = 0; g < KV; ++g) {
    for (std::int64_t j = 0; j < half; ++j) {
      const double a = n01(rng), b = n01(rng);
      for (std::int64_t c = 0; c < D; ++c) {
        const double x = src.wk[static_cast<std::size_t>((g * d + j) * D + c)];
        const double y = src.wk[static_cast<std::size_t>((g * d + j + half) * D + c)];
        reader.wk[static_cast<std::size_t>((g * d + j) * D + c)] =
            a * x - b * y + (off_span ? n01(rng) : 0.0);
        reader.wk[static_cast<std::size_t>((g * d + j + half) * D + c)] = a * y + b * x;
      }
    }
    for (std::int64_t r = 0; r < d; ++r) {
      std::vector<double> mix(static_cast<std::size_t>(d));
      for (auto& m : mix) m = n01(rng);
      for (std::int64_t c = 0; c < D; ++c) {
        double v = 0;
        for (std::int64_t k = 0; k < d; ++k)
          v += mix[static_cast<std::size_t>(k)] *
               src.wv[static_cast<std::size_t>((g * d + k) * D + c)];
        reader.wv[static_cast<std::size_t>((g * d + r) * D + c)] = v;
      }
    }
  }
  s.layers.push_back(reader);
  for (int i = 0; i < 300; ++i) {
    std::vector<double> h(static_cast<std::size_t>(D));
    for (auto& x : h) x = n01(rng);
    s.samples.push_back(h);
  }
  return s;
}

// Worst difference, over sample pairs, of every query head's score and of the attention
// output W_O v, between a reader's own K/V and the shared one.
double WorstDifference(const AttentionProjections& before, const AttentionProjections& after,
                       const SharedKv& shared, const std::vector<std::vector<double>>& samples) {
  const std::int64_t d = before.head_dim, group = before.heads / before.kv_heads;
  double worst = 0;
  for (std::size_t a = 0; a < 20; ++a) {
    const auto q0 = Apply(before.wq, samples[a]), q1 = Apply(after.wq, samples[a]);
    for (std::size_t b = 0; b < 20; ++b) {
      const auto k0 = Apply(before.wk, samples[b]), k1 = Apply(shared.wk, samples[b]);
      for (std::int64_t h = 0; h < before.heads; ++h) {
        double s0 = 0, s1 = 0;
        for (std::int64_t c = 0; c < d; ++c) {
          s0 += q0[static_cast<std::size_t>(h * d + c)] *
                k0[static_cast<std::size_t>((h / group) * d + c)];
          s1 += q1[static_cast<std::size_t>(h * d + c)] *
                k1[static_cast<std::size_t>((h / group) * d + c)];
        }
        worst = std::max(worst, std::abs(s0 - s1));
      }
    }
    const auto v0 = Apply(before.wv, samples[a]), v1 = Apply(shared.wv, samples[a]);
    std::vector<double> per_head0, per_head1;  // v of the KV head each query head reads
    for (std::int64_t h = 0; h < before.heads; ++h) {
      for (std::int64_t c = 0; c < d; ++c) {
        per_head0.push_back(v0[static_cast<std::size_t>((h / group) * d + c)]);
        per_head1.push_back(v1[static_cast<std::size_t>((h / group) * d + c)]);
      }
    }
    const auto o0 = Apply(before.wo, per_head0), o1 = Apply(after.wo, per_head1);
    for (std::size_t i = 0; i < o0.size(); ++i) worst = std::max(worst, std::abs(o0[i] - o1[i]));
  }
  return worst;
}

}  // namespace

TEST_CASE("a reader whose K/V the source can carry is reproduced exactly", "[fold][cross-layer]") {
  for (bool off_span : {false, true}) {
    INFO("off span: " << off_span);
    Setup s = MakeSetup(off_span);
    const std::vector<AttentionProjections> before = s.layers;
    const std::vector<double> m = InputMoment(s.samples);  // both layers see the same input
    SharingMoments moments{m, {m, m}, {m, m}};
    SharingRecord record;
    const SharedKv shared = FitSharedKv({&s.layers[0], &s.layers[1]}, moments, record);
    REQUIRE(record.key_energy_kept.size() == 2);
    double worst = 0, kept = 1;
    for (std::size_t r = 0; r < 2; ++r)
      worst = std::max(worst, WorstDifference(before[r], s.layers[r], shared, s.samples));
    CHECK(record.ridge == 1e-9);  // a full-rank moment factors under the first ridge
    for (double k : record.key_energy_kept) kept = std::min(kept, k);
    for (double v : record.value_energy_kept)
      CHECK(v == Approx(1.0).epsilon(1e-7));  // values are in span both times
    if (off_span) {
      CHECK(kept < 0.99);  // an independent key direction cannot be shared
      CHECK(worst > 1e-2);
    } else {
      CHECK(kept == Approx(1.0).epsilon(1e-7));
      CHECK(worst < 1e-6);
    }
  }
}

TEST_CASE("a source moment that rounding left indefinite is solved under a larger ridge",
          "[fold][cross-layer]") {
  // 6 samples of 12 channels: a moment of rank 7 at most (with the constant channel), whose null
  // space is pushed below zero by `shift` of its mean diagonal, as float32 rounding of the
  // contexts can leave it with fewer calibration tokens than channels.
  Setup s = MakeSetup(false);
  s.samples.resize(6);
  const std::vector<double> m = InputMoment(s.samples);
  const std::size_t W = s.samples.front().size() + 1, D = W - 1;
  double mean_diag = 0;
  for (std::size_t i = 0; i < D; ++i) mean_diag += m[i * W + i] / static_cast<double>(D);
  for (double shift : {1e-8, 1e-6, 1e-2}) {
    INFO("null space at -" << shift << " of the mean diagonal");
    std::vector<double> source = m;
    for (std::size_t i = 0; i < D; ++i) source[i * W + i] -= shift * mean_diag;
    SharingMoments moments{source, {m, m}, {m, m}};
    SharingRecord record;
    std::vector<AttentionProjections> layers = s.layers;
    auto fit = [&] { FitSharedKv({&layers[0], &layers[1]}, moments, record); };
    if (shift > 1e-3) {
      CHECK_THROWS_WITH(fit(), Catch::Contains("not positive definite even with a ridge of 1e-3"));
      continue;
    }
    REQUIRE_NOTHROW(fit());
    CHECK(record.ridge == (shift == 1e-8 ? 1e-7 : 1e-5));  // the first ridge above the shift
    for (double k : record.key_energy_kept) CHECK(std::isfinite(k));
  }
}

TEST_CASE("mean initialisations follow the reference repositories", "[fold][cross-layer]") {
  std::mt19937 rng(3);
  std::vector<AttentionProjections> p;
  for (int i = 0; i < 3; ++i) p.push_back(RandomLayer(2, 2, 2, 3, rng));
  const std::vector<const AttentionProjections*> readers = {&p[0], &p[1], &p[2]};
  // pythia-mlkv: source <- (source + layer 1) / 2, then <- (that + layer 2) / 2.
  const SharedKv running = MeanSharedKv(readers, 0, MeanRule::kRunningPairwise);
  const SharedKv uniform = MeanSharedKv(readers, 0, MeanRule::kUniform);
  for (std::size_t i = 0; i < p[0].wk.size(); ++i) {
    CHECK(running.wk[i] == Approx(0.25 * p[0].wk[i] + 0.25 * p[1].wk[i] + 0.5 * p[2].wk[i]));
    CHECK(uniform.wv[i] == Approx((p[0].wv[i] + p[1].wv[i] + p[2].wv[i]) / 3));
  }
}
