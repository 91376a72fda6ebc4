#include "runtime_check/attention_heal.h"

#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>
#include <c10/core/InferenceMode.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <optional>
#include <random>
#include <tuple>

#include "calib/output_refit_moments.h"
#include "formats/error.h"
#include "runtime_check/blas_threads.h"
#include "runtime_check/heal_logits.h"
#include "runtime_check/llama_forward.h"
#include "runtime_check/tensor_cache.h"

namespace kvfold {
namespace {

at::Tensor FromVector(const std::vector<float>& v, std::vector<std::int64_t> shape,
                      const at::Device& device) {
  return at::from_blob(const_cast<float*>(v.data()), shape, at::kFloat).clone().to(device);
}

void ToVector(const at::Tensor& t, std::vector<float>& v) {
  const at::Tensor cpu = t.detach().to(at::kCPU).contiguous();
  std::copy(cpu.data_ptr<float>(), cpu.data_ptr<float>() + cpu.numel(), v.begin());
}

// The attention of one layer with trainable projections, on windows [W, T, in_cols]. A layer
// reading another layer's K/V, or read by layers below it, trains W_Q and W_O only.
class Attention {
 public:
  Attention(const ModelConfig& c, std::int64_t layer, const HealWeights& w, std::int64_t T,
            const at::Device& device)
      : H_(w.heads), KV_(w.kv_heads), key_heads_(w.key_heads()), d_(w.head_dim) {
    const std::int64_t D = static_cast<std::int64_t>(w.wo.size()) / (H_ * d_);
    weights_ = {FromVector(w.wq, {H_ * d_, w.in_cols}, device),
                FromVector(w.wk, {key_heads_ * d_, w.in_cols}, device),
                FromVector(w.wv, {KV_ * d_, w.in_cols}, device),
                FromVector(w.wo, {D, H_ * d_}, device)};
    // The layer's own RoPE (Gemma 3's sliding layers: their base), window, scale and soft-cap.
    std::tie(cos_, sin_) = LayerRopeTables(T, c, layer, device);
    mask_ = w.kv_above ? BelowDiagonalMask(T, device) : CausalMask(T, c.WindowOf(layer), device);
    if (w.kv_above) {  // the first token reads nothing: its output is zero
      first_token_kept_ = at::ones({1, T, 1}, at::TensorOptions().device(device));
      first_token_kept_[0][0][0] = 0;
    }
    scale_ = c.AttentionScale();
    soft_cap_ = c.attn_logit_softcap;
    eps_ = c.rms_norm_eps;
    if (!w.q_norm.empty()) {
      q_norm_ = FromVector(w.q_norm, {d_}, device);
      k_norm_ = FromVector(w.k_norm, {d_}, device);
    }
    if (!w.k_cache_proj.empty()) {
      q_cache_proj_ = FromVector(w.q_cache_proj, {H_, d_, d_}, device);
      k_cache_proj_ = FromVector(w.k_cache_proj, {KV_, d_, key_heads_ / KV_ * d_}, device);
    }
    trained_ = w.kv_source != nullptr || w.kv_fixed ? std::vector<std::size_t>{0, 3}
                                                    : std::vector<std::size_t>{0, 1, 2, 3};
    for (std::size_t i : trained_)
      params_.push_back(weights_[i]);  // trained as they are, unless TrainDeltas says otherwise
  }
  // With rank > 0, trains from here on a rank-`rank` delta of each matrix instead of the matrix:
  // W + A B, A [rows, rank] zero, B [rank, cols] uniform with rows of unit expected norm, drawn
  // from `seed` (mt19937_64: the same on every platform).
  void TrainDeltas(std::int64_t rank, std::uint64_t seed) {
    if (rank <= 0) return;
    params_.clear();
    std::mt19937_64 random(seed ^ 0x9e3779b97f4a7c15ULL);
    for (std::size_t i : trained_) {
      const at::Tensor& w = weights_[i];
      const std::int64_t rows = w.size(0), cols = w.size(1), r = std::min({rank, rows, cols});
      std::vector<float> b(static_cast<std::size_t>(r * cols));
      const double half_width = std::sqrt(3.0 / static_cast<double>(cols));
      for (float& e : b) e = static_cast<float>(half_width * (2 * UnitUniform(random) - 1));
      params_.push_back(at::zeros({rows, r}, w.options()));
      params_.push_back(FromVector(b, {r, cols}, w.device()));
    }
  }
  bool low_rank() const { return params_.size() > trained_.size(); }
  std::vector<at::Tensor>& params() { return params_; }
  // Adam's step for each of params(): `lr` times the matrix's RMS (for A: what moves W + A B by
  // as much as a step on W itself would, given B's unit rows).
  std::vector<double> StepSizes(double lr) const {
    std::vector<double> steps;
    for (std::size_t j = 0; j < trained_.size(); ++j) {
      const at::Tensor& w = weights_[trained_[j]];
      const double rms = std::max(w.pow(2).mean().sqrt().item<double>(), 1e-12);
      if (!low_rank()) {
        steps.push_back(lr * rms);
        continue;
      }
      const at::Tensor& b = params_[2 * j + 1];
      steps.push_back(lr * rms * std::sqrt(static_cast<double>(b.size(1)) / b.size(0)));
      steps.push_back(lr * b.pow(2).mean().sqrt().item<double>());
    }
    return steps;
  }
  // Matrix i (q, k, v, o) as it stands.
  at::Tensor Weight(std::size_t i) const {
    const auto j =
        static_cast<std::size_t>(std::find(trained_.begin(), trained_.end(), i) - trained_.begin());
    if (j == trained_.size()) return weights_[i];  // not trained
    if (!low_rank()) return params_[j];
    return weights_[i] + at::matmul(params_[2 * j], params_[2 * j + 1]);
  }

  // The output on x; keys and values from x_kv (the layer's own inputs, or those of the layer
  // whose K/V it reads).
  at::Tensor Output(const at::Tensor& x, const at::Tensor& x_kv) const {
    const std::int64_t W = x.size(0), T = x.size(1);
    auto heads = [&](std::size_t i, std::int64_t n) {
      return at::matmul(i == 1 || i == 2 ? x_kv : x, Weight(i).t()).view({W, T, n, d_});
    };
    at::Tensor q = ApplyRope(Normed(heads(0, H_), q_norm_), cos_, sin_);
    at::Tensor k = ApplyRope(Normed(heads(1, key_heads_), k_norm_), cos_, sin_);
    if (k_cache_proj_.defined())
      std::tie(q, k) = ReconstructQueryKey(q, k, q_cache_proj_, k_cache_proj_);
    at::Tensor ctx = DenseAttention(q, k, heads(2, KV_), mask_, scale_, soft_cap_);
    if (first_token_kept_.defined()) ctx = ctx * first_token_kept_;
    return at::matmul(ctx, Weight(3).t());
  }

 private:
  static double UnitUniform(std::mt19937_64& random) {
    return static_cast<double>(random() >> 11) * 0x1.0p-53;
  }

  // Each head of x [W, T, n, d] through the runtime's RMSNorm with `weight` (undefined: x as it
  // is); its expression is differentiable as it stands.
  at::Tensor Normed(const at::Tensor& x, const at::Tensor& weight) const {
    return weight.defined() ? RmsNorm(x, weight, eps_) : x;
  }

  std::int64_t H_, KV_, key_heads_, d_;  // key_heads_ > KV_: reconstruct-mode keys
  double scale_ = 1, soft_cap_ = 0, eps_ = 0;
  std::vector<at::Tensor> weights_;   // q, k, v, o as the fold left them
  std::vector<std::size_t> trained_;  // which of them Adam trains
  std::vector<at::Tensor> params_;    // what Adam trains: those matrices, or A, B per matrix
  at::Tensor cos_, sin_, mask_;
  at::Tensor first_token_kept_;  // [1, T, 1]: 0 for the first token (kv_above), else undefined
  at::Tensor q_norm_, k_norm_;   // per-head norms before RoPE, or undefined
  at::Tensor q_cache_proj_, k_cache_proj_;  // reconstruct mode's projections, or undefined
};

// Some windows: the inputs x [n, T, in_cols]; x_kv, what keys and values are formed from (x
// itself, or the captured inputs of the layer whose K/V this layer reads); the targets y
// [n, T, D]; or, for target=logits (no y), the residual stream entering the layer and the
// source's after its last layer, [n, T, D] each.
struct Windows {
  at::Tensor x, x_kv, y;
  at::Tensor stream, source_final;
};

// target=logits: the model above the layer and the source's final states, window for window.
struct LogitsTarget {
  const ModelAbove& above;
  const HealWindows& final_states;
};

// The windows of one part (fit or held out), read from the captured windows when a step needs
// them (which may be in heal's spill file): inputs with the bias column, and targets, the source
// context through the source o_proj (plus the residual difference of target=trajectory), or
// with `logits` the residual streams that target needs.
class Part {
 public:
  Part(const HealWindows& data, const HealWindows* kv_source, std::vector<std::int64_t> rows,
       const at::Tensor& source_wo, bool bias, const LogitsTarget* logits)
      : data_(data),
        kv_source_(kv_source),
        rows_(std::move(rows)),
        wo_t_(source_wo.t()),
        bias_(bias),
        logits_(logits) {
    energy_ = logits_ ? static_cast<double>(count() * data_.T) : TargetEnergy();
  }
  std::int64_t count() const { return static_cast<std::int64_t>(rows_.size()); }
  // What the errors are relative to: sum ||y||^2, or the tokens (target=logits).
  double energy() const { return energy_; }
  // The summed error of a's output on `b`: the squared distance to the targets, or the KL of the
  // source's next-token distributions to the model's (target=logits).
  at::Tensor Error(const Attention& a, const Windows& b) const {
    const at::Tensor out = a.Output(b.x, b.x_kv);
    if (logits_) return logits_->above.KlSum(out, b.stream, b.source_final);
    return (out - b.y).pow(2).sum();
  }
  // Error relative to `b`'s own energy (a training step's loss).
  at::Tensor Loss(const Attention& a, const Windows& b) const {
    if (logits_) return Error(a, b) / static_cast<double>(b.stream.size(0) * b.stream.size(1));
    return Error(a, b) / b.y.pow(2).sum().clamp_min(std::numeric_limits<float>::min());
  }
  static std::vector<std::int64_t> Range(std::int64_t first, std::int64_t n) {
    std::vector<std::int64_t> r(static_cast<std::size_t>(n));
    for (std::int64_t i = 0; i < n; ++i) r[static_cast<std::size_t>(i)] = first + i;
    return r;
  }
  // The part's windows `which` (its own indices).
  Windows Batch(const std::vector<std::int64_t>& which) const {
    if (logits_) return StreamBatch(which);
    const auto n = static_cast<std::int64_t>(which.size());
    const std::int64_t T = data_.T, D = data_.D, HD = data_.HD;
    at::Tensor x = at::empty({n, T, D}, at::kFloat), ctx = at::empty({n, T, HD}, at::kFloat);
    at::Tensor residual = data_.residual.empty() ? at::Tensor() : at::empty({n, T, D}, at::kFloat);
    at::Tensor x_kv = kv_source_ ? at::empty({n, T, D}, at::kFloat) : at::Tensor();
    for (std::int64_t i = 0; i < n; ++i) {
      const std::int64_t w = rows_.at(static_cast<std::size_t>(which[static_cast<std::size_t>(i)]));
      data_.input.Read(w, x[i].data_ptr<float>());
      data_.context.Read(w, ctx[i].data_ptr<float>());
      if (residual.defined()) data_.residual.Read(w, residual[i].data_ptr<float>());
      if (x_kv.defined()) kv_source_->input.Read(w, x_kv[i].data_ptr<float>());
    }
    const at::Device device = wo_t_.device();
    at::Tensor y = at::matmul(ctx.to(device), wo_t_);
    if (residual.defined()) y = y + residual.to(device);
    x = WithBias(x.to(device));
    return {x, x_kv.defined() ? WithBias(x_kv.to(device)) : x, y, {}, {}};
  }

 private:
  double TargetEnergy() const {  // sum ||y||^2 over the part's windows
    double sum = 0;
    for (std::int64_t w = 0; w < count(); w += 8) {
      const std::int64_t n = std::min<std::int64_t>(8, count() - w);
      sum += Batch(Range(w, n)).y.pow(2).sum().item<double>();
    }
    return sum;
  }

  // target=logits: inputs, and the two residual streams (no y).
  Windows StreamBatch(const std::vector<std::int64_t>& which) const {
    const auto n = static_cast<std::int64_t>(which.size());
    const std::int64_t T = data_.T, D = data_.D;
    at::Tensor x = at::empty({n, T, D}, at::kFloat), stream = at::empty({n, T, D}, at::kFloat);
    at::Tensor final = at::empty({n, T, D}, at::kFloat);
    at::Tensor x_kv = kv_source_ ? at::empty({n, T, D}, at::kFloat) : at::Tensor();
    for (std::int64_t i = 0; i < n; ++i) {
      const std::int64_t w = rows_.at(static_cast<std::size_t>(which[static_cast<std::size_t>(i)]));
      data_.input.Read(w, x[i].data_ptr<float>());
      data_.stream.Read(w, stream[i].data_ptr<float>());
      logits_->final_states.input.Read(w, final[i].data_ptr<float>());
      if (x_kv.defined()) kv_source_->input.Read(w, x_kv[i].data_ptr<float>());
    }
    const at::Device device = wo_t_.device();
    x = WithBias(x.to(device));
    return {x, x_kv.defined() ? WithBias(x_kv.to(device)) : x, at::Tensor(), stream.to(device),
            final.to(device)};
  }

  at::Tensor WithBias(const at::Tensor& x) const {
    if (!bias_) return x;
    return at::cat({x, at::ones({x.size(0), x.size(1), 1}, x.options())}, -1);
  }

  const HealWindows& data_;
  const HealWindows* kv_source_;    // null: keys and values from data_'s own inputs
  std::vector<std::int64_t> rows_;  // window indices in `data_`
  at::Tensor wo_t_;                 // [HD, D]
  bool bias_;
  const LogitsTarget* logits_;  // null: targets y
  double energy_ = 0;
};

double RelativeError(const Attention& a, const Part& p) {
  if (p.count() == 0) return std::numeric_limits<double>::quiet_NaN();
  at::NoGradGuard no_grad;
  double sum = 0;
  for (std::int64_t w = 0; w < p.count(); w += 8) {
    const Windows b = p.Batch(Part::Range(w, std::min<std::int64_t>(8, p.count() - w)));
    sum += p.Error(a, b).item<double>();
  }
  return sum / std::max(p.energy(), std::numeric_limits<double>::min());
}

// Adam with bias correction; each tensor moves by its own step size (Attention::StepSizes), on
// a cosine schedule over `steps`.
class Adam {
 public:
  Adam(const std::vector<at::Tensor>& params, std::vector<double> step_sizes, std::int64_t steps)
      : steps_(steps), step_(std::move(step_sizes)) {
    for (const at::Tensor& p : params) {
      m_.push_back(at::zeros_like(p));
      v_.push_back(at::zeros_like(p));
    }
  }
  void Step(std::vector<at::Tensor>& params) {
    ++t_;
    const double b1 = 0.9, b2 = 0.999;
    const double schedule =
        0.5 * (1 + std::cos(M_PI * static_cast<double>(t_ - 1) / static_cast<double>(steps_)));
    const double c1 = 1 - std::pow(b1, t_), c2 = 1 - std::pow(b2, t_);
    at::NoGradGuard no_grad;
    for (std::size_t i = 0; i < params.size(); ++i) {
      const at::Tensor g = params[i].grad();
      m_[i].mul_(b1).add_(g, 1 - b1);
      v_[i].mul_(b2).addcmul_(g, g, 1 - b2);
      const at::Tensor denom = (v_[i] / c2).sqrt_().add_(1e-30);
      params[i].addcdiv_(m_[i], denom, -step_[i] * schedule / c1);
      params[i].mutable_grad().zero_();
    }
  }

 private:
  std::int64_t steps_, t_ = 0;
  std::vector<at::Tensor> m_, v_;
  std::vector<double> step_;
};

// The fit windows' order: a Fisher-Yates shuffle per pass over them, from a fixed seed (mt19937_64
// is specified exactly, so every platform visits them alike).
std::vector<std::int64_t> VisitOrder(std::int64_t n, std::int64_t visits, std::uint64_t seed) {
  std::mt19937_64 random(seed);
  std::vector<std::int64_t> order, pass(static_cast<std::size_t>(n));
  while (static_cast<std::int64_t>(order.size()) < visits) {
    for (std::int64_t i = 0; i < n; ++i) pass[static_cast<std::size_t>(i)] = i;
    for (std::int64_t i = n - 1; i > 0; --i) {
      std::swap(pass[static_cast<std::size_t>(i)],
                pass[static_cast<std::size_t>(random() % static_cast<std::uint64_t>(i + 1))]);
    }
    order.insert(order.end(), pass.begin(), pass.end());
  }
  return order;
}

// Training allocates the same few-MiB tensors every step: they are kept and reused
// (runtime_check/tensor_cache.h, formats/heap_policy.h); when it returns, that counts as a layer
// boundary for both.
class ReleaseHeapAtEnd {
 public:
  ReleaseHeapAtEnd() = default;
  ~ReleaseHeapAtEnd() { ReleaseLayerMemory(); }
  ReleaseHeapAtEnd(const ReleaseHeapAtEnd&) = delete;
  ReleaseHeapAtEnd& operator=(const ReleaseHeapAtEnd&) = delete;
};

// Adam on `fit` from the weights `a` holds, checking `held` every check_every steps; leaves `a`
// as trained and returns the weights of the best check (empty when none beat `start_error`),
// with that check's step and error in `out`.
std::vector<at::Tensor> Train(Attention& a, const Part& fit, const Part& held,
                              const HealSettings& s, double start_error, HealOutcome& out) {
  std::vector<at::Tensor> best;
  double best_error = start_error;
  std::int64_t since_better = 0;
  Adam adam(a.params(), a.StepSizes(s.lr), s.steps);
  const std::int64_t n_fit = fit.count();
  const std::int64_t batch = std::min(s.batch, n_fit);
  const std::vector<std::int64_t> order = VisitOrder(n_fit, s.steps * batch, s.seed);
  for (std::int64_t step = 1; step <= s.steps; ++step) {
    const std::vector<std::int64_t> rows(order.begin() + (step - 1) * batch,
                                         order.begin() + step * batch);
    const Windows b = fit.Batch(rows);
    fit.Loss(a, b).backward();
    adam.Step(a.params());
    out.steps = step;
    if (step % s.check_every != 0 && step != s.steps) continue;
    const double e = RelativeError(a, held);
    if (e < best_error) {
      best_error = e;
      out.best_step = step;
      out.held_out_after = e;
      best.clear();
      for (std::size_t i = 0; i < 4; ++i) best.push_back(a.Weight(i).detach().clone());
      since_better = 0;
    } else if (++since_better >= s.patience) {
      break;
    }
  }
  return best;
}

}  // namespace

HealWindows SourceFinalStates(const ReferenceModel& source,
                              const std::vector<ReferenceModel::ObservedBatch>& batches,
                              const std::shared_ptr<MemoryBudget>& budget) {
  HealWindows out;
  out.D = source.config().hidden_size;
  auto rows = std::make_shared<SpilledRows>(budget, "heal window spill file");
  for (const auto& b : batches) out.T = static_cast<std::int64_t>(b.tokens.size()) / b.windows;
  source.FinalStates(batches, [&](std::int64_t sequence, const float* window) {
    out.sequences.push_back(sequence);
    out.input.Add(rows, rows->Append(window, out.T * out.D));
  });
  return out;
}

HealOutcome HealAttention(const ModelConfig& layer, std::int64_t layer_index,
                          const HealWindows& data, const std::vector<float>& source_wo,
                          HealWeights& w, const HealSettings& s, const std::string& device_spec,
                          const HealLogitsTarget* logits) {
  c10::InferenceMode not_inference(false);
  const ReleaseHeapAtEnd heap;
  // One layer's small products: OpenBLAS's own pool beside ATen's threads only oversubscribes
  // the cores (measured: 2.5x slower at --threads 2 on mini-mha, docs/results.md).
  const ScopedSingleThreadBlas one_blas_thread;
  at::AutoGradMode grad(true);
  const at::Device device = ParseDevice(device_spec);
  const std::int64_t W = data.count(), D = data.D;
  if (W < 2) Fail("heal", "needs at least 2 calibration windows (one is held out)");
  std::vector<std::int64_t> fit_rows, held_rows;
  for (std::int64_t i = 0; i < W; ++i) {
    (HeldOutWindow(data.sequences[static_cast<std::size_t>(i)], W) ? held_rows : fit_rows)
        .push_back(i);
  }
  const bool bias = w.in_cols == D + 1;
  const at::Tensor wo = FromVector(source_wo, {D, data.HD}, device);
  if (w.kv_source != nullptr && w.kv_source->sequences != data.sequences)
    Fail("heal", "internal: the K/V source layer's windows are not this layer's");
  std::optional<ModelAbove> above;
  std::optional<LogitsTarget> target;
  if (logits != nullptr) {
    if (logits->final_states->sequences != data.sequences || data.stream.count() != W)
      Fail("heal", "internal: target=logits has not every window's residual streams");
    above.emplace(logits->source->impl(), layer_index, data.T, device);
    target.emplace(LogitsTarget{*above, *logits->final_states});
  }
  const LogitsTarget* t = target ? &*target : nullptr;
  const Part fit(data, w.kv_source, std::move(fit_rows), wo, bias, t);
  const Part held(data, w.kv_source, std::move(held_rows), wo, bias, t);

  Attention a(layer, layer_index, w, data.T, device);
  a.TrainDeltas(s.rank, s.seed);
  for (at::Tensor& p : a.params()) p.set_requires_grad(true);
  HealOutcome out;
  out.fit_before = RelativeError(a, fit);
  out.held_out_before = RelativeError(a, held);
  const std::vector<at::Tensor> best = Train(a, fit, held, s, out.held_out_before, out);
  // Kept only when the held-out error fell by 0.1%: an exact fold stays byte for byte.
  if (best.empty() || !(out.held_out_after < out.held_out_before * (1 - 1e-3))) {
    out.best_step = 0;
    out.fit_after = out.fit_before;
    out.held_out_after = out.held_out_before;
    return out;
  }
  ToVector(best[0], w.wq);
  ToVector(best[1], w.wk);
  ToVector(best[2], w.wv);
  ToVector(best[3], w.wo);
  const Attention kept(layer, layer_index, w, data.T, device);
  out.fit_after = RelativeError(kept, fit);
  return out;
}

}  // namespace kvfold
