#include "converter/passes/gqa_fold.h"

#include <catch2/catch.hpp>
#include <cmath>
#include <random>

#include "formats/error.h"
#include "tests/passes/random_layer.h"

using namespace kvfold;

namespace {

// A layer with H query heads, KV key/value heads, head dim d, hidden D, random weights.
AttentionProjections RandomLayer(std::int64_t H, std::int64_t KV, std::int64_t d, std::int64_t D,
                                 unsigned seed) {
  std::mt19937 rng(seed);
  return test::RandomLayer(H, KV, d, D, rng);
}

// sum over samples of y y^T for y = W h, [rows, rows].
std::vector<double> Moment(const std::vector<double>& w, std::int64_t rows, std::int64_t D,
                           const std::vector<std::vector<double>>& samples) {
  std::vector<double> m(static_cast<std::size_t>(rows * rows), 0.0);
  for (const auto& h : samples) {
    std::vector<double> y(static_cast<std::size_t>(rows), 0.0);
    for (std::int64_t r = 0; r < rows; ++r) {
      for (std::int64_t c = 0; c < D; ++c) y[r] += w[r * D + c] * h[c];
    }
    for (std::int64_t a = 0; a < rows; ++a) {
      for (std::int64_t b = 0; b < rows; ++b) m[a * rows + b] += y[a] * y[b];
    }
  }
  return m;
}

std::vector<std::vector<double>> Samples(int n, std::int64_t D, unsigned seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<double> n01;
  std::vector<std::vector<double>> s(n, std::vector<double>(static_cast<std::size_t>(D)));
  for (auto& v : s)
    for (auto& x : v) x = n01(rng);
  return s;
}

std::vector<double> Project(const std::vector<double>& w, std::int64_t row0, std::int64_t rows,
                            std::int64_t D, const std::vector<double>& h) {
  std::vector<double> y(static_cast<std::size_t>(rows), 0.0);
  for (std::int64_t r = 0; r < rows; ++r) {
    for (std::int64_t c = 0; c < D; ++c) y[r] += w[(row0 + r) * D + c] * h[c];
  }
  return y;
}

// rotate_half RoPE of one head vector at position `pos`.
std::vector<double> Rope(std::vector<double> x, double pos) {
  const std::size_t d = x.size(), half = d / 2;
  for (std::size_t j = 0; j < half; ++j) {
    const double a = pos * std::pow(10000.0, -2.0 * j / d);
    const double x1 = x[j], x2 = x[j + half];
    x[j] = x1 * std::cos(a) - x2 * std::sin(a);
    x[j + half] = x2 * std::cos(a) + x1 * std::sin(a);
  }
  return x;
}

double Dot(const std::vector<double>& a, const std::vector<double>& b) {
  double s = 0;
  for (std::size_t i = 0; i < a.size(); ++i) s += a[i] * b[i];
  return s;
}

}  // namespace

TEST_CASE("value fold at full rank preserves W_O W_V exactly", "[gqa][fold]") {
  AttentionProjections p = RandomLayer(4, 2, 4, 6, 1);
  const AttentionProjections before = p;
  const auto samples = Samples(50, 6, 2);
  FoldRecord record;
  FoldValues(p, 2, Moment(p.wv, 8, 6, samples), record);
  for (double kept : record.value_energy_kept) CHECK(kept == Approx(1.0));
  // Per query head h (reading KV head h / 2): W_O[:, h] W_V[kv] is unchanged.
  for (std::int64_t h = 0; h < 4; ++h) {
    const std::int64_t kv = h / 2;
    for (std::int64_t r = 0; r < 6; ++r) {
      for (std::int64_t c = 0; c < 6; ++c) {
        double a = 0, b = 0;
        for (std::int64_t k = 0; k < 4; ++k) {
          a += before.wo[r * 16 + h * 4 + k] * before.wv[(kv * 4 + k) * 6 + c];
          b += p.wo[r * 16 + h * 4 + k] * p.wv[(kv * 4 + k) * 6 + c];
        }
        REQUIRE(b == Approx(a).margin(1e-9));
      }
    }
  }
}

TEST_CASE("commute key fold is exact at every position when pairs are complex multiples",
          "[gqa][fold][rope]") {
  // Two KV heads where head 1's pair j is head 0's pair j times a complex c_j: the group has
  // rank 1 per pair, so the RoPE-commuting fold to one head must be lossless at any position.
  const std::int64_t d = 8, D = 5, half = 4;
  AttentionProjections p = RandomLayer(4, 2, d, D, 3);
  std::mt19937 rng(4);
  std::normal_distribution<double> n01;
  for (std::int64_t j = 0; j < half; ++j) {
    const double cr = n01(rng), ci = n01(rng);
    for (std::int64_t c = 0; c < D; ++c) {
      const double x = p.wk[j * D + c], y = p.wk[(j + half) * D + c];
      p.wk[(d + j) * D + c] = cr * x - ci * y;         // Re(c z)
      p.wk[(d + j + half) * D + c] = cr * y + ci * x;  // Im(c z)
    }
  }
  const AttentionProjections unfolded = p;
  const auto samples = Samples(30, D, 5);
  // Unweighted, and weighted by (arbitrary, unequal) query energies: both must be exact here.
  std::vector<double> query_energy(static_cast<std::size_t>(4 * d));
  for (std::size_t i = 0; i < query_energy.size(); ++i)
    query_energy[i] = 0.1 + static_cast<double>(i % 7);
  const bool weighted = GENERATE(false, true);
  INFO("weighted " << weighted);
  const AttentionProjections before = unfolded;
  FoldRecord record;
  FoldKeysCommute(p, 1, Moment(p.wk, 2 * d, D, samples), record,
                  weighted ? &query_energy : nullptr);
  REQUIRE(p.kv_heads == 1);
  CHECK(record.key_energy_kept[0] == Approx(1.0));
  for (int trial = 0; trial < 5; ++trial) {
    const auto hq = Samples(1, D, 100 + trial)[0], hk = Samples(1, D, 200 + trial)[0];
    const double pq = 3 + 17 * trial, pk = 1 + 5 * trial;  // arbitrary positions
    for (std::int64_t h = 0; h < 4; ++h) {
      const std::int64_t kv = h / 2;
      const double original = Dot(Rope(Project(before.wq, h * d, d, D, hq), pq),
                                  Rope(Project(before.wk, kv * d, d, D, hk), pk));
      const double folded =
          Dot(Rope(Project(p.wq, h * d, d, D, hq), pq), Rope(Project(p.wk, 0, d, D, hk), pk));
      REQUIRE(folded == Approx(original).margin(1e-9));
    }
  }
}

TEST_CASE("lossy folds keep between 0 and 1 of the energy, best-first", "[gqa][fold]") {
  AttentionProjections p = RandomLayer(8, 4, 4, 16, 6);
  const auto samples = Samples(200, 16, 7);
  const auto vm = Moment(p.wv, 16, 16, samples), km = Moment(p.wk, 16, 16, samples);
  FoldRecord two, one;
  AttentionProjections a = p, b = p;
  FoldValues(a, 2, vm, two);
  FoldValues(b, 1, vm, one);
  for (double kept : two.value_energy_kept) CHECK((kept > 0.5 && kept < 1.0));
  CHECK(one.value_energy_kept[0] <
        std::min(two.value_energy_kept[0], two.value_energy_kept[1]) + 1e-12);
  FoldRecord rec;
  const KeyReconstruction r = ReconstructKeys(p, 2, km, rec);
  CHECK(r.k_cache_proj.size() == 2 * 4 * 8);
  CHECK(r.q_cache_proj.size() == 8 * 4 * 4);
  CHECK((rec.key_energy_kept[0] > 0.5 && rec.key_energy_kept[0] < 1.0));
  // Psi_g has orthonormal rows: Psi Psi^T = I.
  for (int g = 0; g < 2; ++g) {
    for (int a_row = 0; a_row < 4; ++a_row) {
      for (int b_row = 0; b_row < 4; ++b_row) {
        double s = 0;
        for (int c = 0; c < 8; ++c)
          s += r.k_cache_proj[(g * 4 + a_row) * 8 + c] * r.k_cache_proj[(g * 4 + b_row) * 8 + c];
        CHECK(s == Approx(a_row == b_row ? 1.0 : 0.0).margin(1e-12));
      }
    }
  }
}

TEST_CASE("query-weighted reconstruct bases are exact at full rank", "[gqa][fold]") {
  // t = 1: q' . k' = q^T S^-1 Psi^T Psi S k = q . k for any positive weights S.
  AttentionProjections p = RandomLayer(4, 2, 4, 6, 9);
  const auto samples = Samples(40, 6, 10);
  std::vector<double> query_energy(16);
  for (std::size_t i = 0; i < query_energy.size(); ++i)
    query_energy[i] = 0.5 + static_cast<double>(i % 5);
  FoldRecord record;
  const KeyReconstruction r =
      ReconstructKeys(p, 2, Moment(p.wk, 8, 6, samples), record, &query_energy);
  const auto q = Samples(1, 4, 11)[0], k = Samples(1, 4, 12)[0];
  for (std::int64_t h = 0; h < 4; ++h) {
    const std::int64_t g = h / 2;  // full rank: group g is original head g
    std::vector<double> qp(4, 0.0), kp(4, 0.0);
    for (int a = 0; a < 4; ++a) {
      for (int b = 0; b < 4; ++b) {
        qp[a] += r.q_cache_proj[(h * 4 + a) * 4 + b] * q[b];
        kp[a] += r.k_cache_proj[(g * 4 + a) * 4 + b] * k[b];
      }
    }
    CHECK(Dot(qp, kp) == Approx(Dot(q, k)).margin(1e-9));
  }
}

TEST_CASE("uneven grouping is refused", "[gqa][fold]") {
  AttentionProjections p = RandomLayer(8, 4, 4, 6, 8);
  CHECK_THROWS_WITH(MeanPoolKv(p, 3), Catch::Contains("must divide the current 4 KV heads"));
}

namespace {

// sum over samples and query heads of || W_O[:, h] v_kv(h) - W_O'[:, h] v'_kv'(h) ||^2: the error
// of what each head's output makes of its values (attention set aside), before vs after a fold.
double OutputError(const AttentionProjections& before, const AttentionProjections& after,
                   const std::vector<std::vector<double>>& samples) {
  const std::int64_t d = before.head_dim, D = before.hidden, o_cols = before.heads * d;
  double error = 0;
  for (const auto& x : samples) {
    for (std::int64_t h = 0; h < before.heads; ++h) {
      const auto v0 = Project(before.wv, (h / (before.heads / before.kv_heads)) * d, d, D, x);
      const auto v1 = Project(after.wv, (h / (after.heads / after.kv_heads)) * d, d, D, x);
      for (std::int64_t r = 0; r < D; ++r) {
        double a = 0, b = 0;
        for (std::int64_t k = 0; k < d; ++k) {
          a += before.wo[r * o_cols + h * d + k] * v0[k];
          b += after.wo[r * o_cols + h * d + k] * v1[k];
        }
        error += (a - b) * (a - b);
      }
    }
  }
  return error;
}

}  // namespace

TEST_CASE("output-weighted value fold: lossless where the plain fold is, better where it is not",
          "[gqa][fold]") {
  const auto samples = Samples(200, 6, 5);
  // KV head 1's values equal head 0's: one head's subspace holds both, both folds are exact.
  AttentionProjections dup = RandomLayer(4, 2, 4, 6, 3);
  std::copy_n(dup.wv.begin(), 4 * 6, dup.wv.begin() + 4 * 6);
  for (bool weighted : {false, true}) {
    AttentionProjections p = dup;
    FoldRecord record;
    FoldValues(p, 1, Moment(p.wv, 8, 6, samples), record, weighted);
    p.kv_heads = 1;
    CHECK(OutputError(dup, p, samples) <
          1e-18 * OutputError(dup, RandomLayer(4, 2, 4, 6, 4), samples));
  }
  // Random values: the weighted fold minimises exactly this error, so it can only do better.
  const AttentionProjections random = RandomLayer(4, 2, 4, 6, 7);
  double errors[2];
  for (bool weighted : {false, true}) {
    AttentionProjections p = random;
    FoldRecord record;
    FoldValues(p, 1, Moment(p.wv, 8, 6, samples), record, weighted);
    p.kv_heads = 1;
    errors[weighted] = OutputError(random, p, samples);
  }
  CHECK(errors[1] < 0.999 * errors[0]);
}

namespace {

// A head's vector after a per-head RMSNorm with weight w (Qwen3's q_norm/k_norm, eps 0).
std::vector<double> HeadNorm(std::vector<double> x, const std::vector<double>& w) {
  double ms = 0;
  for (double v : x) ms += v * v / static_cast<double>(x.size());
  for (std::size_t c = 0; c < x.size(); ++c) x[c] = w[c] * x[c] / std::sqrt(ms);
  return x;
}

// sum over samples of z z^T for the normalised keys z of every KV head, [KV d, KV d], and the
// sums of squares of the normalised queries, [H d]: the statistics a Qwen3 layer gives.
void NormalizedMoments(const AttentionProjections& p, const HeadNorms& norms,
                       const std::vector<std::vector<double>>& samples, std::vector<double>& keys,
                       std::vector<double>& query_energy) {
  const std::int64_t d = p.head_dim, kv_dim = p.kv_heads * d, D = p.hidden;
  keys.assign(static_cast<std::size_t>(kv_dim * kv_dim), 0.0);
  query_energy.assign(static_cast<std::size_t>(p.heads * d), 0.0);
  for (const auto& h : samples) {
    std::vector<double> z;
    for (std::int64_t m = 0; m < p.kv_heads; ++m) {
      const auto k = HeadNorm(Project(p.wk, m * d, d, D, h), norms.key);
      z.insert(z.end(), k.begin(), k.end());
    }
    for (std::int64_t a = 0; a < kv_dim; ++a)
      for (std::int64_t b = 0; b < kv_dim; ++b) keys[a * kv_dim + b] += z[a] * z[b];
    for (std::int64_t q = 0; q < p.heads; ++q) {
      const auto v = HeadNorm(Project(p.wq, q * d, d, D, h), norms.query);
      for (std::int64_t c = 0; c < d; ++c) query_energy[q * d + c] += v[c] * v[c];
    }
  }
}

// Score of query head h (token hq at position pq) against its KV head (token hk at pk), each
// through its norm and RoPE.
double NormalizedScore(const AttentionProjections& p, const HeadNorms& norms, std::int64_t h,
                       const std::vector<double>& hq, double pq, const std::vector<double>& hk,
                       double pk) {
  const std::int64_t d = p.head_dim, kv = h / (p.heads / p.kv_heads);
  return Dot(Rope(HeadNorm(Project(p.wq, h * d, d, p.hidden, hq), norms.query), pq),
             Rope(HeadNorm(Project(p.wk, kv * d, d, p.hidden, hk), norms.key), pk));
}

HeadNorms UnequalNorms(std::int64_t d, unsigned seed) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<double> u(0.3, 2.0);
  HeadNorms n;
  for (std::int64_t c = 0; c < d; ++c) {
    n.query.push_back(u(rng));
    n.key.push_back(u(rng));
  }
  return n;
}

}  // namespace

TEST_CASE("normalised-key fold is exact when a group's heads differ by a positive scale",
          "[gqa][fold][qk-norm]") {
  // Each KV head of a group is head 0 times its own positive factor: the norm removes the
  // factor, so the normalised keys of the group are equal and the fold to one head must keep
  // every score at every position, whatever the (unequal) norm weights of a pair's channels.
  const std::int64_t d = 8, D = 6, H = 4;
  AttentionProjections p = RandomLayer(H, 2, d, D, 11);
  for (std::int64_t i = 0; i < d * D; ++i) p.wk[d * D + i] = 2.5 * p.wk[i];
  const HeadNorms norms = UnequalNorms(d, 12);
  const AttentionProjections before = p;
  std::vector<double> keys, query_energy;
  NormalizedMoments(p, norms, Samples(40, D, 13), keys, query_energy);
  const bool weighted = GENERATE(false, true);
  INFO("weighted " << weighted);
  FoldRecord record;
  FoldNormalizedKeys(p, 1, keys, record, weighted ? &query_energy : nullptr, norms);
  REQUIRE(p.kv_heads == 1);
  CHECK(record.key_energy_kept[0] == Approx(1.0));
  for (int trial = 0; trial < 5; ++trial) {
    const auto hq = Samples(1, D, 100 + trial)[0], hk = Samples(1, D, 200 + trial)[0];
    for (std::int64_t h = 0; h < H; ++h) {
      const double original = NormalizedScore(before, norms, h, hq, 3 + 17 * trial, hk, trial);
      REQUIRE(NormalizedScore(p, norms, h, hq, 3 + 17 * trial, hk, trial) ==
              Approx(original).margin(1e-9));
    }
  }
}

TEST_CASE("normalised-key fold: lossy groups keep their scores better than a norm-blind fold",
          "[gqa][fold][qk-norm]") {
  // Correlated but unequal heads of unequal lengths, norm weights that differ between a pair's
  // channels: the fold is lossy and the norm rescales each token. Its scores must follow the
  // originals, more closely than the commuting fold applied to W_K as if there were no norm
  // (same normalised-key statistics).
  const std::int64_t d = 8, D = 12, H = 8, KV = 4;
  AttentionProjections p = RandomLayer(H, KV, d, D, 21);
  std::mt19937 rng(22);
  std::normal_distribution<double> n01;
  for (std::int64_t m = 1; m < KV; m += 2) {  // head m = 0.5 x head m - 1 + noise
    for (std::int64_t i = 0; i < d * D; ++i)
      p.wk[m * d * D + i] = 0.5 * p.wk[(m - 1) * d * D + i] + 0.25 * n01(rng);
  }
  const HeadNorms norms = UnequalNorms(d, 23);
  const AttentionProjections before = p;
  std::vector<double> keys, query_energy;
  NormalizedMoments(p, norms, Samples(400, D, 24), keys, query_energy);
  FoldRecord record, blind_record;
  FoldNormalizedKeys(p, KV / 2, keys, record, &query_energy, norms);
  AttentionProjections blind = before;
  FoldKeysCommute(blind, KV / 2, keys, blind_record, &query_energy);
  double error = 0, blind_error = 0, energy = 0, of = 0, ff = 0;
  const auto held_out = Samples(200, D, 25);
  for (std::size_t s = 0; s + 1 < held_out.size(); s += 2) {
    for (std::int64_t h = 0; h < H; ++h) {
      const double pq = double(s % 37), pk = double(s % 11);
      const auto& hq = held_out[s];
      const auto& hk = held_out[s + 1];
      const double o = NormalizedScore(before, norms, h, hq, pq, hk, pk);
      const double f = NormalizedScore(p, norms, h, hq, pq, hk, pk);
      const double b = NormalizedScore(blind, norms, h, hq, pq, hk, pk);
      error += (f - o) * (f - o), blind_error += (b - o) * (b - o), energy += o * o;
      of += o * f, ff += f * f;
    }
  }
  INFO("relative score error " << error / energy << ", norm-blind " << blind_error / energy);
  CHECK(error < 0.75 * blind_error);         // measured 0.61 of it
  CHECK(of / std::sqrt(energy * ff) > 0.8);  // the folded scores follow the originals
}

TEST_CASE("the fold spread over threads gives the layer the one-thread fold gives", "[gqa][fold]") {
  // 8 query heads on 4 KV heads folded to 2: two groups on up to 3 threads (values, new key
  // rows), eight heads on 3 (W_O decode, query pairs). Each item is the same arithmetic on
  // whichever thread runs it and writes only its own outputs, so the bytes must match; a race or
  // an item run twice or not at all changes them.
  const std::int64_t H = 8, KV = 4, d = 4, D = 6;
  const AttentionProjections source = RandomLayer(H, KV, d, D, 11);
  const auto samples = Samples(60, D, 12);
  const auto value_moment = Moment(source.wv, KV * d, D, samples);
  const auto key_moment = Moment(source.wk, KV * d, D, samples);
  std::vector<double> query_energy(static_cast<std::size_t>(H * d));
  for (std::size_t i = 0; i < query_energy.size(); ++i) query_energy[i] = 1.0 + 0.1 * i;
  auto fold = [&](int threads, FoldRecord& record) {
    AttentionProjections p = source;
    FoldValues(p, 2, value_moment, record, true, threads);
    FoldKeysCommute(p, 2, key_moment, record, &query_energy, threads);
    return p;
  };
  FoldRecord one_record, three_record;
  const AttentionProjections one = fold(1, one_record), three = fold(3, three_record);
  CHECK(three.wq == one.wq);
  CHECK(three.wk == one.wk);
  CHECK(three.wv == one.wv);
  CHECK(three.wo == one.wo);
  CHECK(three.kv_heads == 2);
  CHECK(three_record.value_energy_kept == one_record.value_energy_kept);
  CHECK(three_record.key_energy_kept == one_record.key_energy_kept);
  CHECK(three.wv != source.wv);  // the fold did something
}

TEST_CASE("the value energies kv-heads=auto compares are the ones the fold records",
          "[gqa][fold][allocation]") {
  // ValueEnergyKept takes eigenvalues alone; FoldValues records the same fractions from its
  // eigendecompositions with vectors. dsyevd without vectors takes another path to the same
  // spectrum, so they agree to rounding (1e-12 is a thousand times what double rounding leaves
  // of fractions near 1); a wrong block, group or weighting is off by far more.
  const std::int64_t H = 8, KV = 4, d = 4, D = 12;
  const AttentionProjections source = RandomLayer(H, KV, d, D, 21);
  const auto value_moment = Moment(source.wv, KV * d, D, Samples(40, D, 22));
  for (const bool weighted : {false, true}) {
    for (const std::int64_t k : {1, 2}) {
      AttentionProjections p = source;
      FoldRecord record;
      FoldValues(p, k, value_moment, record, weighted);
      const std::vector<double> kept = ValueEnergyKept(source, k, value_moment, weighted);
      INFO((weighted ? "output-weighted" : "plain") << ", " << k << " KV heads");
      REQUIRE(kept.size() == record.value_energy_kept.size());
      for (std::size_t g = 0; g < kept.size(); ++g) {
        CHECK(kept[g] == Approx(record.value_energy_kept[g]).margin(1e-12));
        CHECK(kept[g] < 1.0 - 1e-6);  // lossy: the comparison is not 1 against 1
      }
    }
  }
}
