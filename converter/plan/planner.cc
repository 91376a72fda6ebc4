#include "converter/plan/planner.h"

#include <stdlib.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <deque>
#include <filesystem>
#include <map>
#include <memory>

#include "calib/calibration_input.h"
#include "calib/tokenizer.h"
#include "calib/windows.h"
#include "converter/convert.h"
#include "formats/checkpoint.h"
#include "formats/error.h"
#include "formats/fatal_signals.h"
#include "formats/owned_folder.h"
#include "formats/progress.h"
#include "formats/ranks.h"
#include "formats/spec_syntax.h"
#include "formats/staged_folder.h"
#include "runtime_check/cache_policy_spec.h"
#include "runtime_check/evaluate.h"

namespace kvfold {
namespace {

using Clock = std::chrono::steady_clock;

// A private folder under $TMPDIR for the candidate conversions, removed afterwards (and on
// SIGINT/SIGTERM). It carries kvfold's scratch marker, so that the scratch of a run killed
// outright is removed by the next plan (formats/owned_folder.h), and nothing else is.
class ScratchFolder {
 public:
  ScratchFolder() {
    const char* tmp = std::getenv("TMPDIR");
    const std::string root = tmp != nullptr && *tmp != '\0' ? tmp : "/tmp";
    RemoveStaleScratch(root);
    std::string pattern = root + "/kvfold-plan.XXXXXX";
    if (::mkdtemp(pattern.data()) == nullptr)
      Fail(pattern, "cannot create the planner's scratch folder");
    path_ = pattern;
    cleanup_ = std::make_unique<RemoveOnFatalSignal>(path_);
    WriteMarker(path_, MarkerKind::kScratch);
  }
  ~ScratchFolder() { RemoveTree(path_); }
  // Where candidate conversion `s` goes.
  std::string Conversion(std::size_t s) const { return path_ + "/s" + std::to_string(s); }

 private:
  static void RemoveStaleScratch(const std::string& root) {
    std::error_code ec;
    for (const auto& entry : std::filesystem::directory_iterator(root, ec)) {
      if (entry.path().filename().string().rfind("kvfold-plan.", 0) != 0) continue;
      const long owner = MarkedOwner(entry.path().string(), MarkerKind::kScratch);
      if (owner == 0 || !ProcessIsGone(owner)) continue;
      std::fprintf(stderr, "kvfold: removing %s, left by an interrupted plan\n",
                   entry.path().c_str());
      RemoveTree(entry.path().string());
    }
  }

  std::string path_;
  std::unique_ptr<RemoveOnFatalSignal> cleanup_;
};

// The scoring windows: the `count` complete windows after the first `calib_tokens` tokens.
// `calib_sha256` gets the calibration file's hash.
std::vector<TokenWindow> ScoringWindows(const PlanJob& o, const Checkpoint& ck,
                                        std::string& calib_sha256) {
  const auto tokenizer = Tokenizer::Load(ck.tokenizer_path);
  const std::int64_t needed =
      o.input.calib_tokens + static_cast<std::int64_t>(o.score_windows) * o.input.window;
  const CalibrationTokens calib =
      LoadCalibrationTokens(o.input.calib_text, *tokenizer, ck.config.vocab_size,
                            static_cast<std::size_t>(needed), ThreadsPerRank(o.compute.threads));
  calib_sha256 = calib.sha256;
  if (static_cast<std::int64_t>(calib.tokens.size()) < needed) {
    Fail(o.input.calib_text,
         std::to_string(calib.tokens.size()) + " tokens; the planner calibrates on the first " +
             std::to_string(o.input.calib_tokens) + " and scores the next " +
             std::to_string(o.score_windows) + " windows of " + std::to_string(o.input.window) +
             ", so it needs " + std::to_string(needed) +
             " (fewer --calib-tokens or --score-windows, or more text)");
  }
  const std::vector<std::int32_t> rest(calib.tokens.begin() + o.input.calib_tokens,
                                       calib.tokens.end());
  return CutWindows(rest, o.input.window, o.score_windows, o.input.calib_text);
}

// What every rank must have alike under mpirun (formats/ranks.h); the checkpoint is hashed only
// with several ranks.
std::vector<RankInput> RankInputs(const PlanJob& o, const Checkpoint& source,
                                  const std::string& calib_sha256) {
  if (RankCount() == 1) return {};
  std::string budgets;
  for (double b : o.budgets) budgets += (budgets.empty() ? "" : ",") + FormatNumber(b);
  return {{"kvfold command", "plan", ""},
          {"checkpoint", SourceSha256(source), o.input.model},
          {"calibration file", calib_sha256, o.input.calib_text},
          {"--budget", budgets, ""},
          {"--calib-tokens", std::to_string(o.input.calib_tokens), ""},
          {"--window", std::to_string(o.input.window), ""},
          {"--score-windows", std::to_string(o.score_windows), ""},
          {"--screen-windows", std::to_string(o.screen_windows), ""},
          {"--survivors", std::to_string(o.survivors), ""},
          {"--plan-seconds", FormatNumber(o.seconds_limit), ""},
          {"--heal", o.heal ? "yes" : "no", ""}};
}

// One scoring pass: the KL of candidates against the source's full cache on `windows`.
class Scorer {
 public:
  Scorer(const PlanJob& o, const Checkpoint& source, std::int32_t bos)
      : o_(o), source_(source), bos_(bos), runtime_(StreamedRuntime(o.compute)) {
    base_ = ReferenceModel::Load(source_, runtime_);
    options_.progress = false;
    options_.across_ranks = true;  // every rank scores its share of the windows
    options_.scored_from =
        o.input.window / 2;  // every candidate on the same positions: see docs/plan.md
  }
  // KL of `cache_spec` ("" = full cache) on the model in `dir`; also its KV bytes fraction.
  double Kl(const std::string& dir, const std::string& cache_spec,
            const std::vector<TokenWindow>& windows) {
    Load(dir);
    CachePolicySpec cache;
    EvalOptions options = options_;
    if (!cache_spec.empty()) {
      cache = MakeCachePolicy(cache_spec, *checkpoint_, o_.input.window);
      options.cache = cache.policy.get();
    }
    return CompareModels(Reference(windows), *model_, options).kl;
  }
  std::vector<std::int64_t> KvHeads(const std::string& dir) {
    Load(dir);
    return checkpoint_->config.KvHeadCounts();
  }
  double BytesFraction(const std::string& dir, const std::string& cache_spec) {
    Load(dir);
    double bits = 16;
    if (!cache_spec.empty()) {
      const CachePolicySpec cache = MakeCachePolicy(cache_spec, *checkpoint_, o_.input.window);
      bits = cache.policy->AverageBits(o_.input.window, options_.scored_from,
                                       checkpoint_->config.head_dim);
    }
    // Both caches at 16 bits before the policy: a fraction of the source's 16-bit cache, both
    // filled to the model's context (a sliding layer holds its window only).
    const std::int64_t context = source_.config.max_position_embeddings;
    return static_cast<double>(checkpoint_->config.KvBytesAt(context, 2)) /
           static_cast<double>(source_.config.KvBytesAt(context, 2)) * bits / 16.0;
  }

 private:
  // The source's sweep over `windows`: run once per window set (screening, scoring) for every
  // candidate scored on it.
  const ReferenceSweep& Reference(const std::vector<TokenWindow>& windows) {
    for (const auto& [w, sweep] : sweeps_) {
      if (w == windows) return sweep;
    }
    sweeps_.emplace_back(windows, SweepReference(*base_, windows, bos_, options_));
    return sweeps_.back().second;
  }
  void Load(const std::string& dir) {
    if (dir == loaded_) return;
    model_.reset();
    checkpoint_ = std::make_unique<Checkpoint>(OpenCheckpoint(dir));
    model_ = ReferenceModel::Load(*checkpoint_, runtime_);
    loaded_ = dir;
  }
  const PlanJob& o_;
  const Checkpoint& source_;
  std::int32_t bos_;
  RuntimeOptions runtime_;
  EvalOptions options_;
  std::unique_ptr<ReferenceModel> base_, model_;
  std::unique_ptr<Checkpoint> checkpoint_;
  std::string loaded_;
  std::deque<std::pair<std::vector<TokenWindow>, ReferenceSweep>> sweeps_;  // stable addresses
};

// Converts `structure` (with kv-scales where FP8 can follow) into `dir`.
void ConvertStructure(const PlanJob& o, const PlanStructure& s, const std::string& dir) {
  ConvertToFolder(o.input, s.fp8_scales ? WithKvScales(s.passes) : s.passes, dir, o.compute);
}

// Layers, most sensitive first: the screening KL of a 2-bit cache on that layer alone (`kl` gets
// each layer's).
std::vector<std::int64_t> RankLayers(Scorer& scorer, const std::string& dir, std::int64_t layers,
                                     const std::vector<TokenWindow>& screen,
                                     std::vector<double>& kl) {
  kl.clear();
  for (std::int64_t l = 0; l < layers; ++l)
    kl.push_back(scorer.Kl(dir, LayerProbeCache(layers, l), screen));
  std::vector<std::int64_t> order(static_cast<std::size_t>(layers));
  for (std::int64_t l = 0; l < layers; ++l) order[static_cast<std::size_t>(l)] = l;
  std::stable_sort(order.begin(), order.end(), [&](std::int64_t a, std::int64_t b) {
    return kl[static_cast<std::size_t>(a)] > kl[static_cast<std::size_t>(b)];
  });
  return order;
}

bool Fits(const PlanCandidate& c, double budget) {
  return c.bytes_fraction <= budget * (1 + 1e-12);
}

// The candidates worth every window: per budget, the `survivors` best screened that fit it.
std::vector<std::size_t> Survivors(const PlanResult& r, const PlanJob& o) {
  std::vector<bool> chosen(r.candidates.size(), false);
  for (double budget : o.budgets) {
    std::vector<std::size_t> fitting;
    for (std::size_t i = 0; i < r.candidates.size(); ++i) {
      if (Fits(r.candidates[i], budget) && !std::isnan(r.candidates[i].quick_kl))
        fitting.push_back(i);
    }
    std::stable_sort(fitting.begin(), fitting.end(), [&](std::size_t a, std::size_t b) {
      return r.candidates[a].quick_kl < r.candidates[b].quick_kl;
    });
    for (std::size_t k = 0; k < fitting.size() && k < static_cast<std::size_t>(o.survivors); ++k)
      chosen[fitting[k]] = true;
  }
  std::vector<std::size_t> out;
  for (std::size_t i = 0; i < chosen.size(); ++i) {
    if (chosen[i]) out.push_back(i);
  }
  return out;
}

// Marks the screening frontier: no candidate with a smaller or equal fraction screens better.
void MarkFrontier(std::vector<PlanCandidate>& candidates) {
  std::vector<std::size_t> order;
  for (std::size_t i = 0; i < candidates.size(); ++i) {
    if (!std::isnan(candidates[i].quick_kl)) order.push_back(i);
  }
  std::stable_sort(order.begin(), order.end(), [&](std::size_t a, std::size_t b) {
    const auto& x = candidates[a];
    const auto& y = candidates[b];
    return x.bytes_fraction != y.bytes_fraction ? x.bytes_fraction < y.bytes_fraction
                                                : x.quick_kl < y.quick_kl;
  });
  double best = INFINITY;
  for (std::size_t i : order) {
    candidates[i].frontier = candidates[i].quick_kl < best;
    best = std::min(best, candidates[i].quick_kl);
  }
}

// The artifact's name in serve commands: the output given, or a placeholder.
std::string ArtifactPath(PlanRuntime runtime, const std::string& output) {
  if (!output.empty()) return output;
  return runtime == PlanRuntime::kLlamaCpp ? "OUT.gguf" : "OUT";
}

nlohmann::ordered_json Number(double x) {
  return std::isnan(x) ? nlohmann::ordered_json() : nlohmann::ordered_json(x);
}

// --plan-seconds: once passed, no new scoring starts (and the result says so).
class Deadline {
 public:
  explicit Deadline(double seconds) : seconds_(seconds), start_(Clock::now()) {}
  double Elapsed() const { return std::chrono::duration<double>(Clock::now() - start_).count(); }
  bool Passed(PlanResult& r) const {
    r.time_limited |= seconds_ > 0 && Elapsed() > seconds_;
    return r.time_limited;
  }

 private:
  double seconds_;
  Clock::time_point start_;
};

PlanResult NewResult(const PlanJob& o, const Checkpoint& source) {
  PlanResult r;
  r.runtime = o.runtime;
  r.structures = PlanStructures(source.config, o.runtime, &r.refused);
  if (o.heal)
    r.structures = WithHealedStructures(std::move(r.structures), source.config, &r.refused);
  r.convert_seconds.assign(r.structures.size(), std::numeric_limits<double>::quiet_NaN());
  r.caches = PlanCaches(o.runtime, source.config.head_dim);
  r.calibration_tokens = o.input.calib_tokens;
  r.window = o.input.window;
  r.score_windows = o.score_windows;
  r.screen_windows = o.screen_windows;
  r.scored_from = o.input.window / 2;
  for (double b : o.budgets) r.plans.push_back({b, -1});
  return r;
}

// Screening: every combination on the screening windows, one conversion at a time. The model as it
// is comes first: its layers' sensitivity to a low-bit cache adds the per-layer caches.
void Screen(const PlanJob& o, const Checkpoint& source, const std::vector<TokenWindow>& screen,
            const ScratchFolder& scratch, Scorer& scorer, const Deadline& deadline, PlanResult& r) {
  const std::int64_t layers = source.config.num_hidden_layers;
  // Per-layer cache precision is kvfold's runtime's alone. Progress counts those caches to come
  // too: their number depends on the layer count alone.
  const bool per_layer_caches = o.runtime == PlanRuntime::kKvfold;
  const std::vector<std::int64_t> any_order(static_cast<std::size_t>(layers), 0);
  const std::size_t per_structure =
      r.caches.size() + (per_layer_caches ? ProtectedCaches(r.caches, any_order).size() : 0);
  Progress progress("plan", static_cast<std::int64_t>(r.structures.size() * (per_structure + 1)),
                    "steps", o.compute.progress);
  std::int64_t step = 0;
  for (std::size_t s = 0; s < r.structures.size() && !deadline.Passed(r); ++s) {
    const PlanStructure& st = r.structures[s];
    const auto t0 = Clock::now();
    ConvertStructure(o, st, scratch.Conversion(s));
    r.convert_seconds[s] = std::chrono::duration<double>(Clock::now() - t0).count();
    progress.Update(++step,
                    "converted " + (st.passes.empty() ? "(none)" : PipelineText(st.passes)));
    if (s == 0 && per_layer_caches) {
      r.layers_by_sensitivity =
          RankLayers(scorer, scratch.Conversion(0), layers, screen, r.layer_kl);
      const auto protected_caches = ProtectedCaches(r.caches, r.layers_by_sensitivity);
      r.caches.insert(r.caches.end(), protected_caches.begin(), protected_caches.end());
    }
    for (std::size_t c = 0; c < r.caches.size(); ++c) {
      progress.Update(++step);
      if ((r.caches[c].needs_fp8_scales && !st.fp8_scales) ||
          (!r.caches[c].spec.empty() && !st.cache_policies))
        continue;
      PlanCandidate k = Combine(r.structures, s, r.caches, c);
      k.kv_heads = scorer.KvHeads(scratch.Conversion(s));
      k.bytes_fraction = scorer.BytesFraction(scratch.Conversion(s), k.kv_cache);
      if (!deadline.Passed(r)) k.quick_kl = scorer.Kl(scratch.Conversion(s), k.kv_cache, screen);
      r.candidates.push_back(std::move(k));
    }
  }
}

// Per budget, the best fully scored candidate within it (ties to the fewer bytes).
void ChoosePlans(PlanResult& r) {
  for (BudgetPlan& plan : r.plans) {
    for (std::size_t i = 0; i < r.candidates.size(); ++i) {
      const PlanCandidate& k = r.candidates[i];
      if (std::isnan(k.kl) || !Fits(k, plan.budget)) continue;
      const PlanCandidate* best =
          plan.candidate < 0 ? nullptr : &r.candidates[static_cast<std::size_t>(plan.candidate)];
      if (!best || k.kl < best->kl ||
          (k.kl == best->kl && k.bytes_fraction < best->bytes_fraction)) {
        plan.candidate = static_cast<int>(i);
      }
    }
  }
}

}  // namespace

std::vector<double> ParseBudgets(const std::string& text) {
  std::vector<double> budgets;
  for (const std::string& raw : SplitSpecList(text)) {
    const std::string item = TrimSpaces(raw);
    const std::optional<double> b = ParseSpecNumber(item);
    if (!b || !(*b > 0 && *b <= 1)) Fail("--budget", "'" + item + "' is not a fraction in (0, 1]");
    budgets.push_back(*b);
  }
  if (budgets.empty()) Fail("--budget", "give at least one fraction, e.g. 0.5,0.25");
  return budgets;
}

PlanResult RunPlan(const PlanJob& o) {
  const Deadline deadline(o.seconds_limit);
  if (o.budgets.empty()) Fail("--budget", "give at least one fraction, e.g. 0.5,0.25");
  if (o.screen_windows < 1 || o.screen_windows > o.score_windows) {
    Fail("--screen-windows", "must be between 1 and --score-windows");
  }
  const Checkpoint source = OpenCheckpoint(o.input.model);
  std::string calib_sha256;
  const std::vector<TokenWindow> windows = ScoringWindows(o, source, calib_sha256);
  RequireSameOnEveryRank(RankInputs(o, source, calib_sha256));
  PlanResult r = NewResult(o, source);
  const ScratchFolder scratch;
  const auto tokenizer = Tokenizer::Load(source.tokenizer_path);
  Scorer scorer(o, source, tokenizer->bos_id());
  Screen(o, source, {windows.begin(), windows.begin() + o.screen_windows}, scratch, scorer,
         deadline, r);
  // The survivors on every window, grouped by conversion (sorted indexes keep them together).
  for (std::size_t i : Survivors(r, o)) {
    if (deadline.Passed(r)) break;
    PlanCandidate& k = r.candidates[i];
    k.kl = scorer.Kl(scratch.Conversion(k.structure), k.kv_cache, windows);
  }
  MarkFrontier(r.candidates);
  ChoosePlans(r);
  r.seconds = deadline.Elapsed();
  return r;
}

namespace {

// The conversions tried, with what each cost (wall seconds; null when not reached).
nlohmann::ordered_json StructuresJson(const PlanResult& r) {
  nlohmann::ordered_json out = nlohmann::ordered_json::array();
  for (std::size_t s = 0; s < r.structures.size(); ++s) {
    out.push_back({{"passes", PipelineText(r.structures[s].passes)},
                   {"family", r.structures[s].family},
                   {"convert_seconds", Number(r.convert_seconds.at(s))}});
  }
  return out;
}

// The conversions not tried because a pass refuses the model, with its reason.
nlohmann::ordered_json RefusedJson(const PlanResult& r) {
  nlohmann::ordered_json out = nlohmann::ordered_json::array();
  for (const RefusedStructure& s : r.refused)
    out.push_back({{"passes", s.passes}, {"reason", s.reason}});
  return out;
}

}  // namespace

nlohmann::ordered_json PlanJson(const PlanResult& r, const std::string& output) {
  nlohmann::ordered_json plans = nlohmann::ordered_json::array(),
                         candidates = nlohmann::ordered_json::array();
  for (const BudgetPlan& p : r.plans) {
    if (p.candidate < 0) {
      plans.push_back({{"budget", p.budget},
                       {"passes", nullptr},
                       {"kv_cache", nullptr},
                       {"bytes_fraction", nullptr},
                       {"kl", nullptr}});
      continue;
    }
    const PlanCandidate& k = r.candidates[static_cast<std::size_t>(p.candidate)];
    const PlanServing serving = ServingOf(r.runtime, k, ArtifactPath(r.runtime, output));
    auto name = [](const std::string& s) {
      return s.empty() ? nlohmann::ordered_json() : nlohmann::ordered_json(s);
    };
    plans.push_back({{"budget", p.budget},
                     {"passes", PipelineText(k.passes)},
                     {"kv_cache", name(k.kv_cache)},
                     {"bytes_fraction", k.bytes_fraction},
                     {"kl", k.kl},
                     {"family", k.family},
                     {"runtime", PlanRuntimeName(r.runtime)},
                     {"artifact", serving.artifact},
                     {"kv_heads", k.kv_heads},
                     {"cache_k", name(serving.cache_k)},
                     {"cache_v", name(serving.cache_v)},
                     {"serve", serving.serve}});
  }
  for (const PlanCandidate& k : r.candidates) {
    candidates.push_back({{"passes", PipelineText(k.passes)},
                          {"kv_cache", k.kv_cache.empty() ? nlohmann::ordered_json()
                                                          : nlohmann::ordered_json(k.kv_cache)},
                          {"family", k.family},
                          {"bytes_fraction", k.bytes_fraction},
                          {"screen_kl", Number(k.quick_kl)},
                          {"kl", Number(k.kl)},
                          {"frontier", k.frontier}});
  }
  return {{"runtime", PlanRuntimeName(r.runtime)},
          {"plans", std::move(plans)},
          {"layer_sensitivity",
           {{"probe", "keys and values at 2 bits (RTN) on that layer alone"},
            {"kl", r.layer_kl},
            {"most_sensitive_first", r.layers_by_sensitivity}}},
          {"scoring",
           {{"calibration_tokens", r.calibration_tokens},
            {"window", r.window},
            {"windows", r.score_windows},
            {"screen_windows", r.screen_windows},
            {"scored_from", r.scored_from},
            {"reference", "the source model with its full cache"}}},
          {"time_limited", r.time_limited},
          {"seconds", r.seconds},
          {"structures", StructuresJson(r)},
          {"refused_structures", RefusedJson(r)},
          {"candidates", std::move(candidates)}};
}

std::string PlanTable(const PlanResult& r) {
  std::string out = "budget  bytes    KL        passes | kv-cache\n";
  char line[64];
  for (const BudgetPlan& p : r.plans) {
    std::snprintf(line, sizeof line, "%-7.4g ", p.budget);
    out += line;
    if (p.candidate < 0) {
      out += "(no candidate scored within this budget)\n";
      continue;
    }
    const PlanCandidate& k = r.candidates[static_cast<std::size_t>(p.candidate)];
    std::snprintf(line, sizeof line, "%-8.4f %-9.5f ", k.bytes_fraction, k.kl);
    out += line + (k.passes.empty() ? std::string("(no conversion)") : PipelineText(k.passes)) +
           " | " + (k.kv_cache.empty() ? std::string("(full cache)") : k.kv_cache) + "\n";
    if (r.runtime != PlanRuntime::kKvfold)
      out += "        serve: " + ServingOf(r.runtime, k, ArtifactPath(r.runtime, "")).serve + "\n";
  }
  if (r.time_limited)
    out += "note: --plan-seconds stopped the search; some candidates were not scored\n";
  for (const RefusedStructure& s : r.refused)
    out += "not tried: " + s.passes + " (" + s.reason + ")\n";
  return out;
}

}  // namespace kvfold
