#include "converter/layer_loop.h"

#include <algorithm>
#include <chrono>
#include <map>
#include <optional>

#include "calib/statistics_across_ranks.h"
#include "converter/passes/attention_io.h"
#include "converter/report/report.h"
#include "formats/error.h"
#include "formats/progress.h"
#include "formats/ranks.h"
#include "formats/tensor_names.h"
#include "runtime_check/attention_heal.h"
#include "runtime_check/blas_threads.h"
#include "runtime_check/data_parallel.h"

namespace kvfold {
namespace {

using Clock = std::chrono::steady_clock;

double Since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

// The batches of calibration windows [0, limit): this rank's share (every batch with one rank),
// or with `every_rank` all of them. The batches are cut alike on every rank and dealt out in
// turn. They are cut by the count of all windows, whatever `limit`, so that the batches of a
// limit are the first batches of the whole (heal's source final states meet the sweep's).
std::vector<ReferenceModel::ObservedBatch> MakeBatches(const ReferenceModel& model,
                                                       const CalibrationData& data, int window,
                                                       std::size_t limit = SIZE_MAX,
                                                       bool every_rank = false) {
  const std::size_t per_batch =
      WindowsPerBatch(data.windows.size(), static_cast<std::size_t>(window), OnCpu(model));
  const std::size_t end = std::min(limit, data.windows.size());
  std::vector<ReferenceModel::ObservedBatch> batches;
  for (std::size_t first = 0; first < end; first += per_batch) {
    if (!every_rank && !OwnsItem(first / per_batch)) continue;
    ReferenceModel::ObservedBatch batch;
    batch.windows = static_cast<int>(std::min(per_batch, end - first));
    batch.first_sequence = static_cast<std::int64_t>(first);
    for (std::size_t w = first; w < first + static_cast<std::size_t>(batch.windows); ++w) {
      AppendModelInput(data.windows[w], data.bos, batch.tokens);
    }
    batches.push_back(std::move(batch));
  }
  return batches;
}

// One collector per slot, and the observers that point at them.
struct Collectors {
  std::vector<KvStatisticsCollector> slots;
  std::vector<LayerObserver*> observers;
  Collectors(std::size_t count, unsigned needed, const ModelConfig& c, std::int64_t kv_heads,
             const std::vector<LayerPair>& input_pairs) {
    for (std::size_t s = 0; s < count; ++s) {
      slots.emplace_back(needed, static_cast<int>(c.num_hidden_layers), kv_heads, c.head_dim,
                         c.hidden_size, input_pairs);
      if (c.PerLayerKvHeads()) slots.back().SetLayerKvHeads(c.layer_kv_heads);
      if (needed & kStatNormAttention) slots.back().SetScoreRules(ScoreRulesOf(c));
    }
    for (auto& slot : slots) observers.push_back(&slot);
  }
  // Layer l of every slot, merged in slot order (as KvStatistics::Merge adds them), then freed;
  // then every rank's, in rank order. Collective with several ranks.
  LayerKvStatistics TakeLayer(int l) {
    LayerKvStatistics merged = slots.front().TakeLayer(l);
    for (std::size_t s = 1; s < slots.size(); ++s) merged.Merge(slots[s].TakeLayer(l));
    JoinAcrossRanks(merged);
    return merged;
  }
  // Counts and whatever statistics were not taken, over every slot and rank. Collective.
  KvStatistics Totals() {
    KvStatistics totals = slots.front().statistics();
    for (std::size_t s = 1; s < slots.size(); ++s) totals.Merge(slots[s].statistics());
    JoinAcrossRanks(totals);
    return totals;
  }
};

// The report's spectra group KV heads as the first KV-head pass does (else in pairs).
std::int64_t SpectraGroup(const Pipeline& p, const ModelConfig& c) {
  if (c.PerLayerKvHeads()) return 1;  // one head: every layer's count has it as a divisor
  for (const auto& pass : p.passes) {
    if (pass->KvHeadsAfter() > 0) return c.num_key_value_heads / pass->KvHeadsAfter();
  }
  return c.num_key_value_heads % 2 == 0 ? 2 : 1;
}

LayerPass& AsLayerPass(const std::unique_ptr<Pass>& pass) { return static_cast<LayerPass&>(*pass); }

bool RefitsOutput(const std::unique_ptr<Pass>& pass) {
  return pass->LayerLocal() && AsLayerPass(pass).RefitsOutput();
}

const HealSettings* HealsOf(const std::unique_ptr<Pass>& pass) {
  return pass->LayerLocal() ? AsLayerPass(pass).Heals() : nullptr;
}

// What the heal passes of a pipeline need captured: the most windows any of them trains on, and
// whether one follows the source trajectory (a second hidden stream). Null when none heals.
struct HealNeeds {
  std::int64_t windows = 0;
  bool trajectory = false;
  bool logits = false;  // target=logits: the source's final states
};

std::optional<HealNeeds> HealNeedsOf(const Pipeline& pipeline) {
  std::optional<HealNeeds> needs;
  for (const auto& pass : pipeline.passes) {
    const HealSettings* s = HealsOf(pass);
    if (s == nullptr) continue;
    if (!needs) needs = HealNeeds();
    needs->windows = std::max(needs->windows, s->windows);
    needs->trajectory |= s->target == HealTarget::kTrajectory;
    needs->logits |= s->target == HealTarget::kLogits;
  }
  return needs;
}

// Where heal passes that follow whole-model passes (mlkv, lckv) start: the first heal pass when
// every pass from it on heals and a pass before it is not layer-local; 0 otherwise (no heal, or
// heal inside the converted sweep of layer-local passes).
std::size_t HealSweepStart(const Pipeline& pipeline) {
  const auto& passes = pipeline.passes;
  const auto heals = [](const auto& p) { return HealsOf(p) != nullptr; };
  const auto first = std::find_if(passes.begin(), passes.end(), heals);
  if (first == passes.end() || !std::all_of(first, passes.end(), heals)) return 0;
  const bool whole_model_before =
      std::any_of(passes.begin(), first, [](const auto& p) { return !p->LayerLocal(); });
  return whole_model_before ? static_cast<std::size_t>(first - passes.begin()) : 0;
}

// Every pass's Finish from `first` on, in pipeline order, each with its record.
void FinishPasses(Pipeline& pipeline, ModelDraft& draft, const KvStatistics& totals,
                  std::vector<double>& seconds, PassesRun& run, std::size_t first = 0) {
  for (std::size_t i = first; i < pipeline.passes.size(); ++i) {
    const auto t0 = Clock::now();
    nlohmann::ordered_json record = {{"pass", pipeline.specs[i].Text()}};
    PassContext ctx{draft, totals, record};
    AsLayerPass(pipeline.passes[i]).Finish(ctx);
    run.records.push_back(record);
    seconds[i] += Since(t0);
  }
}

// A pass's own math on layer l: spread by the pass over --threads threads (gqa-svd's KV groups
// and heads), each with one BLAS thread. gqa-svd's fold is many small products and
// eigendecompositions per KV group, and waking OpenBLAS's second thread for each cost more than
// it gave (docs/results.md, "Why gqa-svd is slower at 2 threads"). The refit's solve, which
// scales, keeps the pool.
void RunPassLayer(LayerPass& pass, LayerPassContext& ctx) {
  const ScopedSingleThreadBlas one_thread;
  ctx.threads = static_cast<int>(DataParallelSlots(true));  // --threads, on the CPU
  pass.RunLayer(ctx);
}

// Source mode, layer-local passes none of which follows a K/V change: the source sweep hands
// each layer's statistics to every pass as soon as every batch passed the layer, then frees
// them, and the layer's replaced tensors are sealed. Byte-identical to the whole-model run.
void RunSourceLayerByLayer(Pipeline& pipeline, ModelDraft& draft, const CalibrationData& data,
                           const ConvertJob& o, bool report, std::vector<double>& seconds,
                           PassesRun& run) {
  const Checkpoint& ck = draft.source();
  const std::int64_t group = SpectraGroup(pipeline, ck.config);
  nlohmann::ordered_json spectra = nlohmann::ordered_json::array();
  const LayerDone on_layer = [&](int l, const LayerKvStatistics& statistics,
                                 std::int64_t kv_heads) {
    for (std::size_t i = 0; i < pipeline.passes.size(); ++i) {
      const auto t0 = Clock::now();
      LayerPassContext ctx{draft, l, statistics, kv_heads};
      RunPassLayer(AsLayerPass(pipeline.passes[i]), ctx);
      seconds[i] += Since(t0);
    }
    if (report)
      spectra.push_back(LayerKvSpectrum(statistics, l, kv_heads, ck.config.head_dim, group));
    draft.SealLayer(l);
    draft.WriteLayer(l);  // with the output open: written and freed now
  };
  KvStatistics totals;
  if (pipeline.needed != 0) {
    totals = Calibrate(ck, data, pipeline.needed, o.compute, pipeline.input_pairs, &run.threads,
                       on_layer);
  } else {
    const LayerKvStatistics none;
    for (int l = 0; l < ck.config.num_hidden_layers; ++l) on_layer(l, none, ck.config.KvHeads(l));
  }
  if (report) run.spectra = KvSpectra(std::move(spectra), group, ck.config.head_dim);
  FinishPasses(pipeline, draft, totals, seconds, run);
}

// Layer l's config as the draft has it now: a pass rewrites a layer's heads before its Finish
// changes the model's config.
ModelConfig LayerConfig(const ModelDraft& draft, int l) {
  ModelConfig c = draft.config.ForLayer(l);
  c.num_key_value_heads = LayerKvHeads(draft, l);
  if (draft.Has({TensorRole::kKCacheProj, l})) {
    c.key_projection_heads = draft.Shape({TensorRole::kKProj, l}).front() / c.head_dim;
  }
  return c;
}

LayerWeightSource DraftWeights(const ModelDraft& draft) {
  return {[&draft](const std::string& name) { return draft.Has(name); },
          [&draft](const std::string& name) { return draft.Shape(name); },
          [&draft](const std::string& name, float* out) { draft.ReadF32(name, out); },
          [&draft](const std::string& name) { return draft.Generation(name); }};
}

// The o_proj refit's contexts of layer l, one collector per slot (calib/output_refit_moments.h):
// kept from the run of the layer before a pass to the run after it, in `memory_bytes` (split
// among the slots), the rest spilled.
struct RefitContexts {
  std::vector<OutputRefitCollector> collectors;
  std::vector<LayerObserver*> observers;
  RefitContexts(int l, std::int64_t windows, std::uint64_t memory_bytes, std::size_t slots) {
    collectors.reserve(slots);
    for (std::size_t i = 0; i < slots; ++i)
      collectors.emplace_back(l, windows, memory_bytes / slots);
    for (auto& c : collectors) observers.push_back(&c);
  }
};

// Both observers of one slot on the same run.
class TeeObserver : public LayerObserver {
 public:
  TeeObserver(LayerObserver* a, LayerObserver* b) : a_(a), b_(b) {}
  unsigned Wants(int layer) const override { return a_->Wants(layer) | b_->Wants(layer); }
  void Observe(const AttentionCapture& capture) override {
    if (a_->Wants(capture.layer) != 0) a_->Observe(capture);
    if (b_->Wants(capture.layer) != 0) b_->Observe(capture);
  }

 private:
  LayerObserver *a_, *b_;
};

// Runs `pass` on layer l with an o_proj refit around it: the layer's attention context is
// captured as it stands (unless `refit` already saw that run: the statistics run of the same
// layer), the pass rewrites the layer, the context is captured again on the same hidden states
// (the layer sealed as it will be written), and the pass refits o_proj from the two.
void RunLayerWithRefit(LayerPass& pass, LayerPassContext& ctx, ReferenceModel::Stepper& stepper,
                       RefitContexts& refit, bool captured_before) {
  ModelDraft& draft = ctx.model;
  const int l = ctx.layer;
  if (!captured_before) {
    draft.SealLayer(l);
    stepper.Run(l, LayerConfig(draft, l), DraftWeights(draft), refit.observers, false);
  }
  RunPassLayer(pass, ctx);
  for (auto& c : refit.collectors) c.BeginConverted();
  draft.SealLayer(l);
  stepper.Run(l, LayerConfig(draft, l), DraftWeights(draft), refit.observers, false);
  OutputRefitMoments moments;
  for (auto& c : refit.collectors) moments.Merge(c.Take());  // slot order: deterministic
  JoinAcrossRanks(moments);                                  // then rank order
  pass.RefitLayer(ctx, moments);
}

// The source layer l, which heal's targets are formed with: its config, weights and o_proj.
struct SourceLayer {
  ModelConfig config;
  LayerWeightSource weights;
  std::vector<float> wo;
};

// Layer l of the draft before any pass rewrote it (the converted sweep of layer-local passes).
SourceLayer DraftLayer(ModelDraft& draft, int l) {
  draft.SealLayer(l);
  return {LayerConfig(draft, l), DraftWeights(draft), draft.ReadF32({TensorRole::kOProj, l})};
}

// Layer l of the source checkpoint (heal after whole-model passes, which rewrote every layer).
SourceLayer CheckpointLayer(const Checkpoint& ck, int l) {
  const LayerWeightSource weights{
      [&ck](const std::string& name) { return ck.tensors.Find(name) != nullptr; },
      [&ck](const std::string& name) { return ck.tensors.Get(name).entry->shape; },
      [&ck](const std::string& name, float* out) { ck.tensors.ReadF32(name, out); },
      {}};
  return {ck.config.ForLayer(l), weights,
          ck.tensors.ReadF32(HfTensorName({TensorRole::kOProj, l}))};
}

// `bits` of the source layer on `stream`'s hidden states, for the first `windows` calibration
// windows: every slot's and rank's, in window order, within `budget`. `advance` moves the stream
// past the layer.
HealWindows CaptureHealWindows(const SourceLayer& source, int l, ReferenceModel::Stepper& stream,
                               std::int64_t windows, unsigned bits, bool advance,
                               const std::shared_ptr<MemoryBudget>& budget) {
  std::vector<HealCollector> collectors(stream.slots(), HealCollector(l, windows, bits, budget));
  std::vector<LayerObserver*> observers;
  for (auto& c : collectors) observers.push_back(&c);
  stream.Run(l, source.config, source.weights, observers, advance);
  std::vector<HealWindows> parts;
  for (auto& c : collectors) parts.push_back(c.Take());
  HealWindows all = MergeHealWindows(std::move(parts));
  // every rank trains on every window: the same bytes for any rank count
  JoinAcrossRanks(all, budget);
  return all;
}

// Layer l's training data for each target, and the source o_proj.
struct HealLayerData {
  HealWindows layer, trajectory, logits;
  std::vector<float> source_wo;
};

// Before any heal pass rewrites layer l: the converted stream's inputs and the source layer's
// context on them; with a trajectory target, also the source stream's context and residual
// (advancing that stream past the layer); with a logits target, the converted residual stream.
// The windows keep up to `memory_bytes` in memory, the rest spill.
HealLayerData CaptureHeal(SourceLayer layer, int l, ReferenceModel::Stepper& converted,
                          ReferenceModel::Stepper* source, const HealNeeds& needs,
                          std::uint64_t memory_bytes) {
  HealLayerData d;
  const std::shared_ptr<MemoryBudget> budget = HealBudget(memory_bytes);
  const bool residual = source != nullptr || needs.logits;
  const unsigned bits = kCaptureAttnInput | kCaptureContext | (residual ? kCaptureResidual : 0u);
  d.layer = CaptureHealWindows(layer, l, converted, needs.windows, bits, false, budget);
  if (needs.logits) {
    d.logits = d.layer;
    d.logits.stream = std::move(d.logits.residual);
    d.logits.residual = WindowField();
  }
  if (source != nullptr) {
    const HealWindows s = CaptureHealWindows(layer, l, *source, needs.windows,
                                             kCaptureContext | kCaptureResidual, true, budget);
    d.trajectory = TrajectoryWindows(d.layer, s, budget);
  }
  d.layer.residual = WindowField();
  d.source_wo = std::move(layer.wo);
  return d;
}

// The layer that layers below it read K/V from (lckv's target layer), or -1 when none does.
int LayerReadFromBelow(const ModelConfig& c) {
  int read = -1;
  for (int l = 0; l < c.num_hidden_layers; ++l) {
    const auto source = static_cast<int>(c.KvSourceOf(l));
    if (source <= l) continue;
    if (read >= 0 && source != read)
      Fail("--passes", "heal: layers below read the K/V of more than one layer above them");
    read = source;
  }
  return read;
}

// A layer other layers read K/V from (mlkv), as heal left it: its captured windows and its
// k/v projections (biases as the last column), kept until the last layer reading it is healed.
// For lckv's target layer, read before it is healed, the windows are the source stream's
// (SeedKvFromAbove).
struct KvSourceLayer {
  HealLayerData data;
  std::vector<float> wk, wv;
};

// The heal passes' trainer for layer l: the fold's projections (double, biases as the last
// column) trained in float32 by the runtime against the captured source attention (or, with
// `logits`, the source's next-token distributions). A layer reading another's K/V
// (`kv_source`) trains its queries and o_proj over that layer's K/V.
HealAttentionFn HealTrainer(const ModelDraft& draft, int l, const HealLayerData& d,
                            const KvSourceLayer* kv_source, const HealLogitsTarget* logits,
                            const std::string& device) {
  return [&draft, l, &d, kv_source, logits, device](AttentionProjections& p,
                                                    const HealSettings& s) {
    HealWeights w;
    w.heads = p.heads, w.kv_heads = p.kv_heads, w.head_dim = p.head_dim, w.in_cols = p.in_cols();
    auto to_float = [](const std::vector<double>& v) {
      return std::vector<float>(v.begin(), v.end());
    };
    w.wq = to_float(p.wq);
    w.wk = kv_source ? kv_source->wk : to_float(p.wk);
    w.wv = kv_source ? kv_source->wv : to_float(p.wv);
    w.wo = to_float(p.wo);
    if (kv_source) w.kv_source = &kv_source->data.layer;
    w.kv_above = kv_source && draft.config.KvSourceOf(l) > l;
    w.kv_fixed = LayerReadFromBelow(draft.config) == l;
    if (draft.config.qk_norm) {  // as the runtime multiplies: Gemma's (1 + w)
      const HeadNorms norms = HeadNormsOf(draft, l);
      w.q_norm = to_float(norms.query);
      w.k_norm = to_float(norms.key);
    }
    if (LayerReconstructsKeys(draft, l)) {  // the fold's projections onto the cached heads
      w.q_cache_proj = draft.ReadF32({TensorRole::kQCacheProj, l});
      w.k_cache_proj = draft.ReadF32({TensorRole::kKCacheProj, l});
    }
    const bool by_logits = s.target == HealTarget::kLogits;
    const HealWindows& data = s.target == HealTarget::kTrajectory ? d.trajectory
                              : by_logits                         ? d.logits
                                                                  : d.layer;
    const HealOutcome r = HealAttention(LayerConfig(draft, l), l, data, d.source_wo, w, s, device,
                                        by_logits ? logits : nullptr);
    p.wq.assign(w.wq.begin(), w.wq.end());
    if (!kv_source) p.wk.assign(w.wk.begin(), w.wk.end());
    if (!kv_source) p.wv.assign(w.wv.begin(), w.wv.end());
    p.wo.assign(w.wo.begin(), w.wo.end());
    return r;
  };
}

// heal<target=logits>: the source model and its residual stream after the last layer on every
// window heal captures (every rank computes every window, so that every rank trains alike).
class HealFinalStates {
 public:
  HealFinalStates(const ReferenceModel& model, const CalibrationData& data, const ConvertJob& o,
                  const std::optional<HealNeeds>& needs) {
    if (!needs || !needs->logits) return;
    const auto windows = static_cast<std::size_t>(needs->windows);
    states_ = SourceFinalStates(model, MakeBatches(model, data, o.input.window, windows, true),
                                HealBudget(o.compute.hidden_memory_bytes));
    target_ = {&model, &states_};
  }
  HealFinalStates(const HealFinalStates&) = delete;
  HealFinalStates& operator=(const HealFinalStates&) = delete;
  const HealLogitsTarget* target() const { return target_.source ? &target_ : nullptr; }

 private:
  HealWindows states_;
  HealLogitsTarget target_;
};

// Outside the converted sweep no refit can run: a refit the pipeline asks for is refused, and
// a defaulted one (gqa-svd's refit=o) becomes refit=none, which the recorded pipeline then says.
void DropDefaultRefits(Pipeline& pipeline) {
  for (std::size_t i = 0; i < pipeline.passes.size(); ++i) {
    if (!RefitsOutput(pipeline.passes[i])) continue;
    PassSpec& spec = pipeline.specs[i];
    if (spec.written.count("refit") || spec.written.count("ridge")) {
      Fail("--passes",
           spec.name +
               ": refit=o fits o_proj on the converted layers' own hidden states: it needs the "
               "converted sweep (--calibrate-on converted, the default, and only layer-local "
               "passes)");
    }
    AsLayerPass(pipeline.passes[i]).DisableRefit();
    std::map<std::string, std::string> written = {{"refit", "none"}};
    for (const std::string& key : spec.written) written.emplace(key, spec.values.at(key));
    spec = MakePassSpec(spec.name, written);
  }
}

// Converted mode: see layer_loop.h. Statistics are collected on the layer as written (sealed in
// its output dtype first), so a one-pipeline composition measures what a second kvfold convert
// on the first one's output would.
void RunConverted(Pipeline& pipeline, ModelDraft& draft, const CalibrationData& data,
                  const ConvertJob& o, bool report, std::vector<double>& seconds, PassesRun& run) {
  const Checkpoint& ck = draft.source();
  const ModelConfig& c = ck.config;
  const std::int64_t group = SpectraGroup(pipeline, c);
  const unsigned needed = pipeline.needed & ~static_cast<unsigned>(kStatLayerInputs);
  const auto model = ReferenceModel::Load(ck, StreamedRuntime(o.compute));
  ReferenceModel::Stepper stepper(*model, MakeBatches(*model, data, o.input.window));
  run.threads = stepper.slots();
  KvStatistics totals;
  nlohmann::ordered_json spectra = nlohmann::ordered_json::array();
  Progress progress("convert", c.num_hidden_layers, "layers", o.compute.progress);
  const auto windows = static_cast<std::int64_t>(data.windows.size());
  const std::optional<HealNeeds> heal_needs = HealNeedsOf(pipeline);
  std::optional<ReferenceModel::Stepper> source_stream;  // heal<target=trajectory>
  if (heal_needs && heal_needs->trajectory)
    source_stream.emplace(*model, MakeBatches(*model, data, o.input.window));
  const HealFinalStates logits(*model, data, o, heal_needs);
  for (int l = 0; l < c.num_hidden_layers; ++l) {
    HealLayerData heal_data;
    HealAttentionFn heal;
    if (heal_needs) {
      heal_data =
          CaptureHeal(DraftLayer(draft, l), l, stepper, source_stream ? &*source_stream : nullptr,
                      *heal_needs, o.compute.hidden_memory_bytes);
      heal = HealTrainer(draft, l, heal_data, nullptr, logits.target(), o.compute.device);
    }
    std::optional<LayerKvStatistics> stats;  // of layer l as it stands
    std::int64_t stats_kv = 0;
    bool advanced = false;
    // The refit contexts of the pass about to run, when its statistics run captured them.
    std::optional<RefitContexts> refit;
    // Statistics of the layer as written; when no pass from `first` on changes K/V, the hidden
    // states advance in the same run. When pass `first` refits o_proj, its contexts before the
    // pass are captured in the same run.
    auto collect = [&](std::size_t first) {
      const bool final_weights =
          std::none_of(pipeline.passes.begin() + static_cast<std::ptrdiff_t>(first),
                       pipeline.passes.end(), [](const auto& p) { return p->ChangesKv(); });
      draft.SealLayer(l);
      stats_kv = LayerKvHeads(draft, l);
      const ModelConfig layer = LayerConfig(draft, l);
      Collectors collectors(stepper.slots(), needed, layer, stats_kv, {});
      std::vector<LayerObserver*> observers = collectors.observers;
      std::vector<TeeObserver> tees;
      if (first < pipeline.passes.size() && RefitsOutput(pipeline.passes[first])) {
        refit.emplace(l, windows, o.compute.hidden_memory_bytes, stepper.slots());
        for (std::size_t s = 0; s < observers.size(); ++s)
          tees.emplace_back(observers[s], refit->observers[s]);
        for (std::size_t s = 0; s < observers.size(); ++s) observers[s] = &tees[s];
      }
      stepper.Run(l, layer, DraftWeights(draft), observers, final_weights);
      stats = collectors.TakeLayer(l);
      if (l == 0 && totals.tokens == 0)
        totals = collectors.Totals();  // tokens are counted at layer 0
      advanced = final_weights;
    };
    if (report) {
      collect(0);
      spectra.push_back(LayerKvSpectrum(*stats, l, stats_kv, c.head_dim, group));
    }
    for (std::size_t i = 0; i < pipeline.passes.size(); ++i) {
      if (pipeline.passes[i]->NeededStatistics() != 0 && !stats) collect(i);
      const auto t0 = Clock::now();
      static const LayerKvStatistics kNone;
      LayerPassContext ctx{draft, l, stats ? *stats : kNone, stats_kv, heal ? &heal : nullptr};
      if (RefitsOutput(pipeline.passes[i])) {
        const bool captured = refit.has_value();  // by collect(i), just before
        if (!captured) refit.emplace(l, windows, o.compute.hidden_memory_bytes, stepper.slots());
        RunLayerWithRefit(AsLayerPass(pipeline.passes[i]), ctx, stepper, *refit, captured);
        refit.reset();
      } else {
        RunPassLayer(AsLayerPass(pipeline.passes[i]), ctx);
      }
      seconds[i] += Since(t0);
      if (pipeline.passes[i]->ChangesKv()) stats.reset();
    }
    draft.SealLayer(l);
    if (!advanced) stepper.Run(l, LayerConfig(draft, l), DraftWeights(draft), {}, true);
    draft.WriteLayer(l);  // with the output open: written and freed now
    progress.Update(l + 1);
  }
  if (report) run.spectra = KvSpectra(std::move(spectra), group, c.head_dim);
  FinishPasses(pipeline, draft, totals, seconds, run);
}

// Whole model: statistics of every layer of the source, then pass after pass (those before
// `end`).
void RunWholeModel(Pipeline& pipeline, ModelDraft& draft, const CalibrationData& data,
                   const ConvertJob& o, bool report, std::vector<double>& seconds, PassesRun& run,
                   std::size_t end) {
  KvStatistics stats;
  if (pipeline.needed != 0)
    stats = Calibrate(draft.source(), data, pipeline.needed, o.compute, pipeline.input_pairs,
                      &run.threads);
  for (std::size_t i = 0; i < end; ++i) {
    const auto t0 = Clock::now();
    nlohmann::ordered_json record = {{"pass", pipeline.specs[i].Text()}};
    PassContext ctx{draft, stats, record};
    // A layer-local pass on one BLAS thread, as in the layer loop (RunPassLayer): LAPACK's
    // blocked products round differently on two, and the two paths must give the same bytes.
    std::optional<ScopedSingleThreadBlas> one_thread;
    if (pipeline.passes[i]->LayerLocal()) one_thread.emplace();
    pipeline.passes[i]->Run(ctx);
    run.records.push_back(record);
    seconds[i] = Since(t0);
  }
  if (report) run.spectra = KvSpectra(stats, SpectraGroup(pipeline, draft.source().config));
}

// Layer l (sealed, not yet written) kept for the layers that read its K/V.
KvSourceLayer KeepKvSource(const ModelDraft& draft, int l, HealLayerData d) {
  d.trajectory = HealWindows();  // the readers need the converted stream's inputs only
  d.logits = HealWindows();
  const AttentionProjections p = ReadAttention(draft, l);
  return {std::move(d), std::vector<float>(p.wk.begin(), p.wk.end()),
          std::vector<float>(p.wv.begin(), p.wv.end())};
}

// Heal after lckv: the layers below the target layer t are healed before t has run in the
// converted sweep, so they read t's K/V as the source model's stream gives them. A sweep of the
// source's layers below t, then the draft's layer t: its K/V of every calibration token go to
// `converted` (the readers' forward), its captured inputs and k/v projections to the readers'
// training. Returns {t: that layer}, or nothing when no layer reads above itself.
std::map<int, KvSourceLayer> SeedKvFromAbove(ModelDraft& draft, const ReferenceModel& model,
                                             const CalibrationData& data, const ConvertJob& o,
                                             const HealNeeds& needs,
                                             ReferenceModel::Stepper& converted) {
  std::map<int, KvSourceLayer> seeds;
  const int t = LayerReadFromBelow(draft.config);
  if (t < 0) return seeds;
  ReferenceModel::Stepper stream(model, MakeBatches(model, data, o.input.window));
  for (int l = 0; l < t; ++l) {
    const SourceLayer layer = CheckpointLayer(draft.source(), l);
    stream.Run(l, layer.config, layer.weights, {}, true);
  }
  stream.KeepKv(t);
  HealLayerData d;
  d.layer = CaptureHealWindows(DraftLayer(draft, t), t, stream, needs.windows, kCaptureAttnInput,
                               true, HealBudget(o.compute.hidden_memory_bytes));
  stream.HandKvTo(t, converted);
  seeds.emplace(t, KeepKvSource(draft, t, std::move(d)));
  return seeds;
}

// Heal after whole-model passes (mlkv): the draft holds every layer as those passes left it. A
// converted sweep over it runs the heal passes (from `first` on) layer by layer against the
// source checkpoint's layers; a layer that other layers read K/V from is kept (its windows and
// k/v projections) until the last of them is healed.
void RunHealSweep(Pipeline& pipeline, std::size_t first, ModelDraft& draft,
                  const CalibrationData& data, const ConvertJob& o, std::vector<double>& seconds,
                  PassesRun& run) {
  const Checkpoint& ck = draft.source();
  const ModelConfig& c = draft.config;
  const auto model = ReferenceModel::Load(ck, StreamedRuntime(o.compute));
  ReferenceModel::Stepper stepper(*model, MakeBatches(*model, data, o.input.window));
  const HealNeeds needs = *HealNeedsOf(pipeline);
  std::optional<ReferenceModel::Stepper> source_stream;  // heal<target=trajectory>
  if (needs.trajectory) source_stream.emplace(*model, MakeBatches(*model, data, o.input.window));
  const HealFinalStates logits(*model, data, o, needs);
  std::map<int, KvSourceLayer> kv_sources = SeedKvFromAbove(draft, *model, data, o, needs, stepper);
  Progress progress("heal", c.num_hidden_layers, "layers", o.compute.progress);
  for (int l = 0; l < c.num_hidden_layers; ++l) {
    HealLayerData d =
        CaptureHeal(CheckpointLayer(ck, l), l, stepper, source_stream ? &*source_stream : nullptr,
                    needs, o.compute.hidden_memory_bytes);
    const KvSourceLayer* reads =
        c.ComputesKv(l) ? nullptr : &kv_sources.at(static_cast<int>(c.KvSourceOf(l)));
    const HealAttentionFn heal = HealTrainer(draft, l, d, reads, logits.target(), o.compute.device);
    static const LayerKvStatistics kNone;
    for (std::size_t i = first; i < pipeline.passes.size(); ++i) {
      const auto t0 = Clock::now();
      LayerPassContext ctx{draft, l, kNone, 0, &heal};
      AsLayerPass(pipeline.passes[i]).RunLayer(ctx);
      seconds[i] += Since(t0);
    }
    draft.SealLayer(l);
    stepper.Run(l, LayerConfig(draft, l), DraftWeights(draft), {}, true);
    if (c.ReadsKvAfter(l, l)) kv_sources[l] = KeepKvSource(draft, l, std::move(d));
    for (auto it = kv_sources.begin(); it != kv_sources.end();)
      it = c.ReadsKvAfter(it->first, l) ? std::next(it) : kv_sources.erase(it);
    draft.WriteLayer(l);  // with the output open: written and freed now
    progress.Update(l + 1);
  }
  run.threads = stepper.slots();
  FinishPasses(pipeline, draft, KvStatistics(), seconds, run, first);
}

// Source layer by layer needs every pass layer-local and none after a K/V change (its layer l
// would run before the earlier pass's Finish changed the config).
bool RunsSourceLayerByLayer(const Pipeline& p, const ConvertJob& o) {
  if (!o.layer_by_layer || !p.LayerLocal()) return false;
  bool after_kv_change = false;
  for (const auto& pass : p.passes) {
    if (after_kv_change) return false;
    after_kv_change |= pass->ChangesKv();
  }
  return true;
}

}  // namespace

std::string Pipeline::Text() const { return PipelineText(specs); }

bool Pipeline::LayerLocal() const {
  return std::all_of(passes.begin(), passes.end(), [](const auto& p) { return p->LayerLocal(); });
}

Pipeline CreatePipeline(const PipelineSpec& specs, const ModelConfig& config) {
  if (specs.empty()) Fail("--passes", "no passes given");
  Pipeline p;
  p.specs = specs;
  for (const auto& spec : p.specs) {
    if (spec.name == "kv-norm-analysis" && p.specs.size() > 1) {
      Fail("--passes",
           "kv-norm-analysis runs alone: its table describes the input model's heads "
           "(analyse a converted model in a second run)");
    }
    p.passes.push_back(CreatePass(spec, config));
    RequireSupported(*p.passes.back(), spec.name, config);
    p.needed |= p.passes.back()->NeededStatistics();
    const auto pairs = p.passes.back()->InputPairs();
    p.input_pairs.insert(p.input_pairs.end(), pairs.begin(), pairs.end());
  }
  return p;
}

namespace {

// heal trains what a K/V pass before it changed, on the converted sweep's hidden states: in the
// sweep of layer-local passes, or in its own sweep after whole-model passes (mlkv, lckv).
void CheckHealPlace(const Pipeline& p, std::size_t i, bool recalibrates) {
  const bool own_sweep = HealSweepStart(p) > 0;
  if (!recalibrates && !own_sweep) {
    Fail("--passes",
         "heal trains on the converted layers' own hidden states: it needs the converted sweep "
         "(--calibrate-on converted, the default, and only layer-local passes; after mlkv or "
         "lckv, only heal passes may follow)");
  }
  if (std::none_of(p.passes.begin(), p.passes.begin() + static_cast<std::ptrdiff_t>(i),
                   [](const auto& pass) { return pass->ChangesKv() && !HealsOf(pass); })) {
    Fail("--passes",
         "heal has nothing to heal: put it after a pass that changes K/V (gqa-svd, gqa-meanpool, "
         "mlkv, lckv)");
  }
}

}  // namespace

// Calibrated on the source, a pass that reads K/V statistics, or one that writes numbers tied
// to K/V, cannot follow a pass that changes K/V. Nothing may change K/V after such numbers are
// written (they would describe heads that no longer exist). Attention-input moments
// (kStatLayerInputs) describe h, not K/V: cross-layer sharing may follow gqa-svd, fitting the
// draft's projections against the source's inputs.
void CheckPassOrder(const Pipeline& p, bool recalibrates) {
  for (std::size_t i = 0; i < p.passes.size(); ++i) {
    if (HealsOf(p.passes[i]) != nullptr) CheckHealPlace(p, i, recalibrates);
    for (std::size_t j = 0; j < i; ++j) {
      const unsigned kv_statistics =
          p.passes[i]->NeededStatistics() & ~static_cast<unsigned>(kStatLayerInputs);
      const std::string& a = p.specs[j].name;
      const std::string& b = p.specs[i].name;
      if (!recalibrates && p.passes[j]->ChangesKv() &&
          (kv_statistics != 0 || p.passes[i]->DescribesKv())) {
        Fail("--passes", b + " needs calibration of the model it runs on, but " + a +
                             " changes K/V before it (run " + b +
                             " in a second kvfold convert on the output)");
      }
      if (p.passes[j]->DescribesKv() && p.passes[i]->ChangesKv()) {
        Fail("--passes", b + " would change the K/V that " + a + " has just described (run " + b +
                             " first, or in a separate kvfold convert)");
      }
    }
  }
}

bool CalibratesOnConverted(const Pipeline& p, const ConvertJob& o) {
  return o.calibrate_on == "converted" && o.layer_by_layer && p.LayerLocal();
}

KvStatistics Calibrate(const Checkpoint& ck, const CalibrationData& data, unsigned needed,
                       const ComputePart& compute, const std::vector<LayerPair>& input_pairs,
                       std::size_t* slots_used, const LayerDone& layer_done) {
  const auto model = ReferenceModel::Load(ck, StreamedRuntime(compute));
  const std::size_t slots = DataParallelSlots(*model);
  if (slots_used != nullptr) *slots_used = slots;
  Collectors collectors(slots, needed, ck.config, ck.config.num_key_value_heads, input_pairs);
  Progress progress("calibrate", ck.config.num_hidden_layers, "layers", compute.progress);
  model->ObserveSweep(MakeBatches(*model, data, data.window), collectors.observers,
                      [&](std::int64_t done) {
                        if (layer_done) {
                          const int layer = static_cast<int>(done - 1);
                          layer_done(layer, collectors.TakeLayer(layer), ck.config.KvHeads(layer));
                        }
                        progress.Update(done);
                      });
  return collectors.Totals();
}

namespace {

// Passes that allocate per layer (gqa-svd<kv-heads=auto>) measure every layer on one sweep of
// the source before any layer is rewritten.
void AllocatePerLayer(Pipeline& pipeline, ModelDraft& draft, const CalibrationData& data,
                      const ConvertJob& o) {
  for (auto& pass : pipeline.passes) {
    if (!pass->LayerLocal()) continue;
    LayerPass& p = AsLayerPass(pass);
    const unsigned needed = p.AllocationStatistics();
    if (needed == 0) continue;
    Calibrate(
        draft.source(), data, needed, o.compute, {}, nullptr,
        [&](int l, const LayerKvStatistics& s, std::int64_t) { p.MeasureLayer(draft, l, s); });
    p.Allocate();
  }
}

}  // namespace

PassesRun RunPasses(Pipeline& pipeline, ModelDraft& draft, const CalibrationData& data,
                    const ConvertJob& o, bool report, std::vector<PassTiming>& timings) {
  AllocatePerLayer(pipeline, draft, data, o);
  if (report) pipeline.needed |= kReportStatistics;
  const bool sweeps = pipeline.needed != 0 || HealNeedsOf(pipeline).has_value();
  if (!(CalibratesOnConverted(pipeline, o) && sweeps)) DropDefaultRefits(pipeline);
  PassesRun run;
  std::vector<double> seconds(pipeline.passes.size(), 0.0);
  const auto t0 = Clock::now();
  if (CalibratesOnConverted(pipeline, o)) {
    run.activations = "converted";
    if (sweeps) {
      RunConverted(pipeline, draft, data, o, report, seconds, run);
    } else {  // nothing to measure: the passes alone, layer by layer
      RunSourceLayerByLayer(pipeline, draft, data, o, report, seconds, run);
    }
  } else if (const std::size_t heal_from = HealSweepStart(pipeline); heal_from > 0) {
    run.activations = "source; heal: converted";
    RunWholeModel(pipeline, draft, data, o, report, seconds, run, heal_from);
    RunHealSweep(pipeline, heal_from, draft, data, o, seconds, run);
  } else {
    run.activations = "source";
    if (RunsSourceLayerByLayer(pipeline, o)) {
      RunSourceLayerByLayer(pipeline, draft, data, o, report, seconds, run);
    } else {
      RunWholeModel(pipeline, draft, data, o, report, seconds, run, pipeline.passes.size());
    }
  }
  double passes_total = 0;
  for (double x : seconds) passes_total += x;
  if (pipeline.needed != 0) timings.push_back({"calibration", Since(t0) - passes_total});
  for (std::size_t i = 0; i < pipeline.passes.size(); ++i)
    timings.push_back({pipeline.specs[i].Text(), seconds[i]});
  return run;
}

}  // namespace kvfold
