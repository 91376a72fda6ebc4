// HealAttention (runtime_check/attention_heal.h) against a float64 attention written here from
// the Llama definition (rotate_half RoPE, GQA by repeated KV heads, causal softmax; kvfold's
// reconstruct-mode projections as docs/gqa.md defines them): the errors it
// reports are those of the weights it returns, healing lowers a lossy fold's held-out error, an
// exact fold is left as it was, and reruns give the same bytes.
#include "runtime_check/attention_heal.h"

#include <algorithm>
#include <catch2/catch.hpp>
#include <cmath>
#include <random>
#include <vector>

#include "calib/output_refit_moments.h"
#include "tests/test_support.h"

using namespace kvfold;
using kvfold::test::DeltaRank;

namespace {

constexpr std::int64_t kH = 4, kD = 8, kHidden = 16, kT = 16, kWindows = 32;

ModelConfig Layer() {
  ModelConfig c;
  c.hidden_size = kHidden;
  c.num_attention_heads = kH;
  c.head_dim = kD;
  c.max_position_embeddings = 64;
  return c;
}

std::vector<float> Random(std::size_t n, double scale, std::mt19937_64& g) {
  std::normal_distribution<double> normal(0.0, scale);
  std::vector<float> v(n);
  for (float& x : v) x = static_cast<float>(normal(g));
  return v;
}

// Reconstruct mode: rotated queries [T, H d] and keys [T, KVs d] onto the cached key heads,
// q'_h = Psi_h q_h and k'_g = Psi_g [k_{g t}; ...; k_{g t + t - 1}] (keys become [T, KV d]).
void Reconstruct(const HealWeights& w, std::vector<double>& q, std::vector<double>& k) {
  const std::int64_t H = w.heads, KV = w.kv_heads, d = w.head_dim;
  const std::int64_t td = w.key_heads() / KV * d;
  std::vector<double> q2(q.size(), 0.0), k2(static_cast<std::size_t>(kT * KV * d), 0.0);
  for (std::int64_t t = 0; t < kT; ++t) {
    for (std::int64_t h = 0; h < H; ++h)
      for (std::int64_t a = 0; a < d; ++a)
        for (std::int64_t b = 0; b < d; ++b)
          q2[(t * H + h) * d + a] +=
              double(w.q_cache_proj[(h * d + a) * d + b]) * q[(t * H + h) * d + b];
    for (std::int64_t g = 0; g < KV; ++g)
      for (std::int64_t a = 0; a < d; ++a)
        for (std::int64_t b = 0; b < td; ++b)
          k2[(t * KV + g) * d + a] +=
              double(w.k_cache_proj[(g * d + a) * td + b]) * k[t * KV * td + g * td + b];
  }
  q = std::move(q2);
  k = std::move(k2);
}

// The attention context [T, H d] of one window x [T, in_cols] in float64; keys and values from
// x_kv (another layer's inputs: mlkv) when given. With w.kv_above (lckv) token i attends to
// tokens j < i only, and the first token's context is zero.
std::vector<double> Context(const HealWeights& w, const float* x, const float* x_kv = nullptr) {
  const std::int64_t H = w.heads, KV = w.kv_heads, d = w.head_dim, C = w.in_cols;
  auto project = [&](const std::vector<float>& m, std::int64_t rows, const float* in) {
    std::vector<double> out(static_cast<std::size_t>(kT * rows), 0.0);
    for (std::int64_t t = 0; t < kT; ++t)
      for (std::int64_t r = 0; r < rows; ++r)
        for (std::int64_t c = 0; c < C; ++c)
          out[t * rows + r] += double(m[r * C + c]) * in[t * C + c];
    return out;
  };
  if (x_kv == nullptr) x_kv = x;
  auto rope = [&](std::vector<double>& v, std::int64_t heads) {
    for (std::int64_t t = 0; t < kT; ++t)
      for (std::int64_t h = 0; h < heads; ++h)
        for (std::int64_t j = 0; j < d / 2; ++j) {
          const double angle = t * std::pow(10000.0, -2.0 * j / d);
          double& a = v[t * heads * d + h * d + j];
          double& b = v[t * heads * d + h * d + j + d / 2];
          const double a0 = a, b0 = b;
          a = a0 * std::cos(angle) - b0 * std::sin(angle);
          b = b0 * std::cos(angle) + a0 * std::sin(angle);
        }
  };
  // Qwen3's per-head RMSNorm before RoPE, when the weights have one.
  auto norm = [&](std::vector<double>& v, std::int64_t heads, const std::vector<float>& weight) {
    if (weight.empty()) return;
    for (std::int64_t th = 0; th < kT * heads; ++th) {
      double ms = 0;
      for (std::int64_t e = 0; e < d; ++e) ms += v[th * d + e] * v[th * d + e] / double(d);
      for (std::int64_t e = 0; e < d; ++e)
        v[th * d + e] *= double(weight[e]) / std::sqrt(ms + Layer().rms_norm_eps);
    }
  };
  const std::int64_t KVs = w.key_heads();  // KV, or the source's key heads in reconstruct mode
  std::vector<double> q = project(w.wq, H * d, x), k = project(w.wk, KVs * d, x_kv),
                      v = project(w.wv, KV * d, x_kv);
  norm(q, H, w.q_norm);
  norm(k, KVs, w.k_norm);
  rope(q, H);
  rope(k, KVs);
  if (!w.k_cache_proj.empty()) Reconstruct(w, q, k);
  std::vector<double> ctx(static_cast<std::size_t>(kT * H * d), 0.0);
  for (std::int64_t h = 0; h < H; ++h) {
    const std::int64_t g = h / (H / KV);
    for (std::int64_t i = 0; i < kT; ++i) {
      const std::int64_t seen = w.kv_above ? i : i + 1;  // keys j < seen
      std::vector<double> p(static_cast<std::size_t>(seen));
      double top = -1e300, sum = 0;
      for (std::int64_t j = 0; j < seen; ++j) {
        double s = 0;
        for (std::int64_t e = 0; e < d; ++e)
          s += q[i * H * d + h * d + e] * k[j * KV * d + g * d + e];
        p[j] = s / std::sqrt(double(d));
        top = std::max(top, p[j]);
      }
      for (auto& x : p) sum += (x = std::exp(x - top));
      for (std::int64_t j = 0; j < seen; ++j)
        for (std::int64_t e = 0; e < d; ++e)
          ctx[i * H * d + h * d + e] += p[j] / sum * v[j * KV * d + g * d + e];
    }
  }
  return ctx;
}

// Output rows [T, hidden] = ctx wo^T.
std::vector<double> Output(const HealWeights& w, const float* x, const float* x_kv = nullptr) {
  const std::vector<double> ctx = Context(w, x, x_kv);
  const std::int64_t HD = w.heads * w.head_dim;
  std::vector<double> y(static_cast<std::size_t>(kT * kHidden), 0.0);
  for (std::int64_t t = 0; t < kT; ++t)
    for (std::int64_t o = 0; o < kHidden; ++o)
      for (std::int64_t c = 0; c < HD; ++c)
        y[t * kHidden + o] += ctx[t * HD + c] * w.wo[o * HD + c];
  return y;
}

struct Case {
  HealWeights source, fold;
  HealWindows data;              // input without the bias column
  std::vector<float> with_bias;  // [W, T, hidden + 1]
};

// An MHA source layer with q/k/v biases (and, with `norms`, Qwen3's per-head q/k norms), and its
// fold to 2 KV heads by averaging head pairs.
Case MakeCase(bool norms = false, std::uint64_t budget = UINT64_MAX) {
  std::mt19937_64 g(7);
  Case c;
  const std::int64_t C = kHidden + 1, HD = kH * kD;
  c.source = {kH,
              kH,
              kD,
              C,
              Random(HD * C, 0.4, g),
              Random(HD * C, 0.4, g),
              Random(HD * C, 0.4, g),
              Random(kHidden * HD, 0.3, g),
              {},
              {},
              {},
              {},
              nullptr,
              false,
              false};
  if (norms) {
    c.source.q_norm = Random(kD, 0.3, g);
    c.source.k_norm = Random(kD, 0.3, g);
    for (float& x : c.source.q_norm) x += 1.0f;
    for (float& x : c.source.k_norm) x += 1.0f;
  }
  c.fold = c.source;
  c.fold.kv_heads = 2;
  for (auto* m : {&c.fold.wk, &c.fold.wv}) {
    const std::vector<float> full = *m;
    m->assign(static_cast<std::size_t>(2 * kD * C), 0.0f);
    for (std::int64_t r = 0; r < 2 * kD; ++r)
      for (std::int64_t col = 0; col < C; ++col) {
        const std::int64_t h = r / kD, e = r % kD;
        (*m)[r * C + col] =
            0.5f * (full[(2 * h * kD + e) * C + col] + full[((2 * h + 1) * kD + e) * C + col]);
      }
  }
  const std::vector<float> input = Random(kWindows * kT * kHidden, 1.0, g);
  std::vector<float> context;
  std::vector<std::int64_t> sequences;
  for (std::int64_t w = 0; w < kWindows; ++w) {
    sequences.push_back(w);
    for (std::int64_t t = 0; t < kT; ++t) {
      const float* row = &input[(w * kT + t) * kHidden];
      c.with_bias.insert(c.with_bias.end(), row, row + kHidden);
      c.with_bias.push_back(1.0f);
    }
    const std::vector<double> ctx = Context(c.source, &c.with_bias[w * kT * C]);
    context.insert(context.end(), ctx.begin(), ctx.end());
  }
  c.data = MakeHealWindows(kT, kHidden, HD, sequences, input, context, {}, HealBudget(budget));
  return c;
}

// sum ||y(w) - y(source)||^2 / sum ||y(source)||^2 over the fit (held_out = false) or held-out
// windows, in float64; w's keys and values from `kv_inputs` (with bias column) when given.
double ReferenceError(const Case& c, const HealWeights& w, bool held_out,
                      const std::vector<float>* kv_inputs = nullptr) {
  double err = 0, energy = 0;
  for (std::int64_t win = 0; win < kWindows; ++win) {
    if (HeldOutWindow(win, kWindows) != held_out) continue;
    const std::int64_t at = win * kT * (kHidden + 1);
    const float* x = &c.with_bias[at];
    const std::vector<double> a = Output(w, x, kv_inputs ? &(*kv_inputs)[at] : nullptr),
                              b = Output(c.source, x);
    for (std::size_t i = 0; i < a.size(); ++i) {
      err += (a[i] - b[i]) * (a[i] - b[i]);
      energy += b[i] * b[i];
    }
  }
  return err / energy;
}

HealSettings Settings() {
  HealSettings s;
  s.steps = 100;
  s.batch = 2;
  s.check_every = 5;
  s.patience = 4;
  s.lr = 0.02;
  return s;
}

// The mlkv case's windows: another layer's inputs [W, T, hidden] and with the bias column.
struct OtherLayer {
  std::vector<float> inputs, with_bias;
  HealWindows windows;
};

OtherLayer MakeOtherLayer() {
  std::mt19937_64 g(11);
  OtherLayer o;
  o.inputs = Random(kWindows * kT * kHidden, 1.0, g);
  std::vector<std::int64_t> sequences;
  for (std::int64_t row = 0; row < kWindows * kT; ++row) {
    o.with_bias.insert(o.with_bias.end(), &o.inputs[row * kHidden], &o.inputs[(row + 1) * kHidden]);
    o.with_bias.push_back(1.0f);
  }
  for (std::int64_t w = 0; w < kWindows; ++w) sequences.push_back(w);
  o.windows =
      MakeHealWindows(kT, kHidden, kH * kD, sequences, o.inputs, {}, {}, HealBudget(UINT64_MAX));
  return o;
}

}  // namespace

TEST_CASE("healing lowers a lossy fold's held-out error, and reports the weights it returns",
          "[heal]") {
  const Case c = MakeCase();
  HealWeights w = c.fold;
  const HealOutcome r = HealAttention(Layer(), 0, c.data, c.source.wo, w, Settings(), "cpu");
  // float32 training against float64 sums over a few hundred products: 1e-4 relative
  CHECK(r.fit_before == Approx(ReferenceError(c, c.fold, false)).epsilon(1e-4));
  CHECK(r.held_out_before == Approx(ReferenceError(c, c.fold, true)).epsilon(1e-4));
  REQUIRE(r.best_step > 0);
  CHECK(r.held_out_after < 0.8 * r.held_out_before);
  CHECK(r.fit_after < r.fit_before);
  CHECK(r.held_out_after == Approx(ReferenceError(c, w, true)).epsilon(1e-4));
  CHECK(r.fit_after == Approx(ReferenceError(c, w, false)).epsilon(1e-4));
  CHECK(w.kv_heads == 2);  // the architecture stays

  HealWeights again = c.fold;
  const HealOutcome r2 = HealAttention(Layer(), 0, c.data, c.source.wo, again, Settings(), "cpu");
  CHECK(r2.best_step == r.best_step);
  CHECK(again.wq == w.wq);  // deterministic: the same bytes
  CHECK(again.wk == w.wk);
  CHECK(again.wv == w.wv);
  CHECK(again.wo == w.wo);

  // The same windows with none kept in memory (--hidden-memory 0): read back from the spill
  // file, the same bytes.
  const Case spilled = MakeCase(false, 0);
  HealWeights from_file = c.fold;
  const HealOutcome r3 =
      HealAttention(Layer(), 0, spilled.data, c.source.wo, from_file, Settings(), "cpu");
  CHECK(r3.best_step == r.best_step);
  CHECK(from_file.wq == w.wq);
  CHECK(from_file.wk == w.wk);
  CHECK(from_file.wv == w.wv);
  CHECK(from_file.wo == w.wo);
}

TEST_CASE("healing with rank R changes each matrix by a rank-R delta", "[heal]") {
  const Case c = MakeCase();
  HealSettings s = Settings();
  s.rank = 2;
  HealWeights w = c.fold;
  const HealOutcome r = HealAttention(Layer(), 0, c.data, c.source.wo, w, s, "cpu");
  REQUIRE(r.best_step > 0);
  CHECK(r.held_out_after < 0.9 * r.held_out_before);
  // float32 training against float64 sums: 1e-4 relative, as above
  CHECK(r.held_out_after == Approx(ReferenceError(c, w, true)).epsilon(1e-4));
  CHECK(r.fit_after == Approx(ReferenceError(c, w, false)).epsilon(1e-4));
  // Deltas of ~1e-2 against float32 rounding of ~1e-7 on the weights: 1e-3 separates them. The
  // same count with rank 0 (whole matrices) is the matrix's full rank: the check can fail.
  const std::int64_t C = kHidden + 1, HD = kH * kD;
  CHECK(DeltaRank(w.wq, c.fold.wq, C, 1e-3) == 2);
  CHECK(DeltaRank(w.wk, c.fold.wk, C, 1e-3) == 2);
  CHECK(DeltaRank(w.wv, c.fold.wv, C, 1e-3) == 2);
  CHECK(DeltaRank(w.wo, c.fold.wo, HD, 1e-3) == 2);
  HealWeights whole = c.fold;
  REQUIRE(HealAttention(Layer(), 0, c.data, c.source.wo, whole, Settings(), "cpu").best_step > 0);
  CHECK(DeltaRank(whole.wq, c.fold.wq, C, 1e-3) > 2);

  HealWeights again = c.fold;
  HealAttention(Layer(), 0, c.data, c.source.wo, again, s, "cpu");
  CHECK(again.wq == w.wq);  // deterministic, B's draw included
  CHECK(again.wo == w.wo);
}

TEST_CASE("healing trains through Qwen3's per-head q/k norms", "[heal]") {
  // The norms are applied (the errors before training are the float64 reference's), not trained.
  const Case c = MakeCase(true);
  HealWeights w = c.fold;
  const HealOutcome r = HealAttention(Layer(), 0, c.data, c.source.wo, w, Settings(), "cpu");
  CHECK(r.held_out_before == Approx(ReferenceError(c, c.fold, true)).epsilon(1e-4));
  REQUIRE(r.best_step > 0);
  CHECK(r.held_out_after < 0.8 * r.held_out_before);
  CHECK(r.held_out_after == Approx(ReferenceError(c, w, true)).epsilon(1e-4));
  CHECK(w.q_norm == c.fold.q_norm);
  CHECK(w.k_norm == c.fold.k_norm);
}

TEST_CASE("healing trains through reconstruct-mode key projections", "[heal]") {
  // gqa-svd<rope=reconstruct>'s layout: every source key head kept in k_proj, values folded to
  // 2 heads, and the runtime's projections onto the 2 cached key heads (here the mean of each
  // pair of rotated keys; queries as they are). Applied, not trained.
  const Case c = MakeCase();
  HealWeights fold = c.fold;
  fold.wk = c.source.wk;
  fold.q_cache_proj.assign(static_cast<std::size_t>(kH * kD * kD), 0.0f);
  fold.k_cache_proj.assign(static_cast<std::size_t>(2 * kD * 2 * kD), 0.0f);
  for (std::int64_t h = 0; h < kH; ++h)
    for (std::int64_t a = 0; a < kD; ++a) fold.q_cache_proj[(h * kD + a) * kD + a] = 1.0f;
  for (std::int64_t g = 0; g < 2; ++g)
    for (std::int64_t a = 0; a < kD; ++a) {
      fold.k_cache_proj[(g * kD + a) * 2 * kD + a] = 0.5f;
      fold.k_cache_proj[(g * kD + a) * 2 * kD + kD + a] = 0.5f;
    }
  REQUIRE(fold.key_heads() == kH);
  HealWeights w = fold;
  const HealOutcome r = HealAttention(Layer(), 0, c.data, c.source.wo, w, Settings(), "cpu");
  // float32 training against float64 sums: 1e-4 relative, as above
  CHECK(r.held_out_before == Approx(ReferenceError(c, fold, true)).epsilon(1e-4));
  CHECK(r.fit_before == Approx(ReferenceError(c, fold, false)).epsilon(1e-4));
  REQUIRE(r.best_step > 0);
  CHECK(r.held_out_after < 0.8 * r.held_out_before);
  CHECK(r.held_out_after == Approx(ReferenceError(c, w, true)).epsilon(1e-4));
  CHECK(w.key_heads() == kH);  // the layout stays
  CHECK(w.kv_heads == 2);
  CHECK(w.q_cache_proj == fold.q_cache_proj);
  CHECK(w.k_cache_proj == fold.k_cache_proj);
}

TEST_CASE("a layer reading another layer's K/V heals its queries and o_proj only", "[heal]") {
  // mlkv: the layer's keys and values are another layer's projections of that layer's inputs
  // (here other random windows and the fold's 2-head k/v), fixed while this layer trains.
  const Case c = MakeCase();
  const OtherLayer other = MakeOtherLayer();
  HealWeights reader = c.fold;  // q and o as the source's; k and v the other layer's
  reader.kv_source = &other.windows;
  HealWeights w = reader;
  const HealOutcome r = HealAttention(Layer(), 0, c.data, c.source.wo, w, Settings(), "cpu");
  // float32 training against float64 sums: 1e-4 relative, as above
  CHECK(r.held_out_before ==
        Approx(ReferenceError(c, reader, true, &other.with_bias)).epsilon(1e-4));
  REQUIRE(r.best_step > 0);
  CHECK(r.held_out_after < r.held_out_before);
  CHECK(r.held_out_after == Approx(ReferenceError(c, w, true, &other.with_bias)).epsilon(1e-4));
  CHECK(w.wk == reader.wk);  // not trained: they belong to the other layer
  CHECK(w.wv == reader.wv);
  CHECK(w.wq != reader.wq);
  CHECK(w.wo != reader.wo);
}

TEST_CASE("a layer reading a layer above it sees that layer's K/V of earlier tokens only",
          "[heal]") {
  // lckv: as above, but the runtime masks the diagonal and gives the first token no attention
  // output. The float64 reference does the same; with the diagonal seen, its error differs.
  const Case c = MakeCase();
  const OtherLayer other = MakeOtherLayer();
  HealWeights reader = c.fold;
  reader.kv_source = &other.windows;
  reader.kv_above = true;
  HealWeights w = reader;
  const HealOutcome r = HealAttention(Layer(), 0, c.data, c.source.wo, w, Settings(), "cpu");
  // float32 training against float64 sums: 1e-4 relative, as above
  const double before = ReferenceError(c, reader, true, &other.with_bias);
  CHECK(r.held_out_before == Approx(before).epsilon(1e-4));
  HealWeights causal = reader;
  causal.kv_above = false;
  CHECK(std::abs(ReferenceError(c, causal, true, &other.with_bias) - before) > 1e-2 * before);
  REQUIRE(r.best_step > 0);
  CHECK(r.held_out_after < r.held_out_before);
  CHECK(r.held_out_after == Approx(ReferenceError(c, w, true, &other.with_bias)).epsilon(1e-4));
  CHECK(w.wk == reader.wk);
  CHECK(w.wv == reader.wv);
}

TEST_CASE("a layer whose K/V layers below read heals its queries and o_proj only", "[heal]") {
  // lckv's target layer: its own k/v, fixed, because the layers below were healed against them.
  const Case c = MakeCase();
  HealWeights fixed = c.fold;
  fixed.kv_fixed = true;
  HealWeights w = fixed;
  const HealOutcome r = HealAttention(Layer(), 0, c.data, c.source.wo, w, Settings(), "cpu");
  CHECK(r.held_out_before == Approx(ReferenceError(c, fixed, true)).epsilon(1e-4));
  REQUIRE(r.best_step > 0);
  CHECK(r.held_out_after < r.held_out_before);
  CHECK(w.wk == fixed.wk);
  CHECK(w.wv == fixed.wv);
  CHECK(w.wq != fixed.wq);
  CHECK(w.wo != fixed.wo);
}

TEST_CASE("healing leaves an exact fold exactly as it was", "[heal]") {
  const Case c = MakeCase();
  HealWeights w = c.source;  // nothing was lost: the error is float rounding only
  const HealOutcome r = HealAttention(Layer(), 0, c.data, c.source.wo, w, Settings(), "cpu");
  CHECK(r.held_out_before < 1e-10);
  CHECK(r.best_step == 0);
  CHECK(w.wq == c.source.wq);
  CHECK(w.wk == c.source.wk);
  CHECK(w.wv == c.source.wv);
  CHECK(w.wo == c.source.wo);
}

// Run by scripts/cuda_tests.sh (CTest `cuda`) where a CUDA device is usable; skipped elsewhere.
TEST_CASE("healing on CUDA matches healing on the CPU", "[.][cuda][heal]") {
  const Case c = MakeCase();
  HealWeights cpu = c.fold, cuda = c.fold;
  const HealOutcome a = HealAttention(Layer(), 0, c.data, c.source.wo, cpu, Settings(), "cpu");
  const HealOutcome b = HealAttention(Layer(), 0, c.data, c.source.wo, cuda, Settings(), "cuda");
  // Two devices' float32 kernels sum in different orders; Adam's steps then drift apart a
  // little, so the errors, not the bytes, are compared.
  CHECK(b.held_out_before == Approx(a.held_out_before).epsilon(1e-4));
  CHECK(b.held_out_after == Approx(a.held_out_after).epsilon(2e-2));
  CHECK(b.held_out_after < b.held_out_before);
}
