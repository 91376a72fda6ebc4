#include "converter/passes/kv_quant_passes.h"

#include <catch2/catch.hpp>
#include <cmath>
#include <nlohmann/json.hpp>
#include <random>

#include "calib/text.h"
#include "calib/tokenizer.h"
#include "calib/windows.h"
#include "converter/convert.h"
#include "formats/checkpoint.h"
#include "formats/error.h"
#include "formats/kv_mixed_table.h"
#include "formats/mapped_file.h"
#include "formats/tensor_store.h"
#include "runtime_check/reference_model.h"
#include "tests/test_support.h"

using namespace kvfold;
using kvfold::test::SharedPath;
using kvfold::test::TempDir;

namespace {

constexpr std::int64_t kCalibTokens = 4096;

ConvertJob Options(const std::string& model, const std::string& passes, const std::string& out) {
  ConvertJob o;
  o.input.model = SharedPath("models/" + model);
  o.input.calib_text =
      SharedPath(model.rfind("stories", 0) == 0 ? "text/tinystories/calib.txt"
                                                : "text/wikitext-2/valid.tokens.txt");
  if (!passes.empty()) o.passes = ParsePipeline(passes);
  o.output.path = out;
  o.input.calib_tokens = kCalibTokens;
  o.compute.threads = 2;
  o.compute.progress = false;
  return o;
}

// Independent of the calibration code: per layer and channel, the min/max of post-RoPE keys and
// of values over the same windows, captured straight from the forward pass.
struct Extremes : LayerObserver {
  std::vector<std::vector<float>> key_lo, key_hi, value_lo, value_hi;
  unsigned Wants(int) const override { return kCaptureKeyPostRope | kCaptureValue; }
  void Observe(const AttentionCapture& c) override {
    auto take = [&](const FloatView& x, std::vector<float>& lo, std::vector<float>& hi) {
      const std::int64_t width = x.shape[2] * x.shape[3];
      if (lo.empty())
        lo.assign(static_cast<std::size_t>(width), 1e30f),
            hi.assign(static_cast<std::size_t>(width), -1e30f);
      for (std::int64_t i = 0; i < x.size(); ++i) {
        const auto ch = static_cast<std::size_t>(i % width);
        lo[ch] = std::min(lo[ch], x.data[i]);
        hi[ch] = std::max(hi[ch], x.data[i]);
      }
    };
    const auto l = static_cast<std::size_t>(c.layer);
    for (auto* v : {&key_lo, &key_hi, &value_lo, &value_hi}) v->resize(std::max(v->size(), l + 1));
    take(c.key_post_rope, key_lo[l], key_hi[l]);
    take(c.value, value_lo[l], value_hi[l]);
  }
};

Extremes MeasureExtremes(const ConvertJob& o) {
  const Checkpoint ck = OpenCheckpoint(o.input.model);
  const auto tok = Tokenizer::Load(ck.tokenizer_path);
  const auto windows = CutWindows(tok->Encode(LoadText(o.input.calib_text)), o.input.window,
                                  static_cast<int>(kCalibTokens / o.input.window), "calib");
  const auto model = ReferenceModel::Load(ck, {"cpu", 2});
  Extremes e;
  for (const auto& w : windows) {
    std::vector<std::int32_t> in;
    AppendModelInput(w, tok->bos_id(), in);
    model->Observe(in, 1, e);
  }
  return e;
}

double MaxLogitDiff(const std::string& a, const std::string& b) {
  std::vector<std::int32_t> ids = {1};
  for (int i = 1; i < 96; ++i) ids.push_back(3 + (i * 37) % 500);
  const auto la = ReferenceModel::Load(OpenCheckpoint(a), {"cpu", 2})->Logits(ids);
  const auto lb = ReferenceModel::Load(OpenCheckpoint(b), {"cpu", 2})->Logits(ids);
  double worst = 0;
  for (std::size_t i = 0; i < la.size(); ++i)
    worst = std::max(worst, double(std::abs(la[i] - lb[i])));
  return worst;
}

}  // namespace

TEST_CASE("kv-scales writes vLLM's compressed-tensors FP8 KV scales: amax / 448",
          "[kv-quant][shared]") {
  TempDir tmp;
  const ConvertJob base = Options("stories260K", "", "");
  const Extremes truth = MeasureExtremes(base);
  for (const char* strategy : {"tensor", "head"}) {
    INFO(strategy);
    const std::string out = tmp.File(strategy);
    Convert(Options("stories260K", std::string("kv-scales<strategy=") + strategy + ">", out));
    const auto config = nlohmann::json::parse(ReadFileToString(out + "/config.json"));
    const auto& q = config.at("quantization_config");
    CHECK(q["quant_method"] == "compressed-tensors");
    CHECK(q["kv_cache_scheme"]["num_bits"] == 8);
    CHECK(q["kv_cache_scheme"]["type"] == "float");
    CHECK(q["kv_cache_scheme"]["strategy"] ==
          (std::string(strategy) == "head" ? "attn_head" : "tensor"));
    CHECK(q["kv_cache_scheme"]["dynamic"] == false);
    CHECK(q["kv_cache_scheme"]["symmetric"] == true);
    CHECK(config["num_key_value_heads"] == 4);  // the rest of the config is untouched

    const TensorStore store = TensorStore::OpenModelDir(out);
    const bool per_head = std::string(strategy) == "head";
    for (int l = 0; l < 5; ++l) {
      for (const char* which : {"k_scale", "v_scale"}) {
        INFO("layer " << l << " " << which);
        const std::string name = "model.layers." + std::to_string(l) + ".self_attn." + which;
        const TensorRef& ref = store.Get(name);
        CHECK(ref.entry->dtype == DType::kF32);
        CHECK(ref.entry->shape ==
              (per_head ? std::vector<std::int64_t>{4, 1, 1} : std::vector<std::int64_t>{1}));
        const auto& lo = std::string(which) == "k_scale"
                             ? truth.key_lo[static_cast<std::size_t>(l)]
                             : truth.value_lo[static_cast<std::size_t>(l)];
        const auto& hi = std::string(which) == "k_scale"
                             ? truth.key_hi[static_cast<std::size_t>(l)]
                             : truth.value_hi[static_cast<std::size_t>(l)];
        const std::vector<float> got = store.ReadF32(name);
        for (std::size_t g = 0; g < got.size(); ++g) {
          float amax = 0;
          for (std::size_t ch = 0; ch < lo.size(); ++ch) {
            if (per_head && ch / 8 != g) continue;
            amax = std::max({amax, std::abs(lo[ch]), std::abs(hi[ch])});
          }
          // Calibration batches 8 windows per forward, the truth runs one at a time: different
          // GEMM shapes, so float32 sums differ by a few ulp per layer on some BLAS kernels.
          CHECK(got[g] == Approx(amax / 448.0f).epsilon(1e-5));
        }
      }
    }
    CHECK(MaxLogitDiff(out, SharedPath("models/stories260K")) ==
          0.0);  // weights untouched, scales ignored
  }
}

TEST_CASE("kv-balance folds into W_Q/W_K without changing the logits", "[kv-quant][shared]") {
  TempDir tmp;
  for (const char* model : {"stories260K", "mini-mha"}) {
    INFO(model);
    const std::string out = tmp.File(model);
    ConvertJob o = Options(model, "kv-balance", out);
    o.report.path = tmp.File(std::string(model) + ".html");
    Convert(o);
    CHECK(MaxLogitDiff(out, SharedPath(std::string("models/") + model)) < 1e-4);
    const auto report =
        nlohmann::json::parse(ReadFileToString(tmp.File(std::string(model) + ".json")));
    CHECK(static_cast<std::int64_t>(report["passes"][0]["balance"].size()) ==
          OpenCheckpoint(out).config.num_hidden_layers);
    CHECK(ReadFileToString(o.report.path).find("key outliers after") != std::string::npos);
    const TensorStore a = TensorStore::OpenModelDir(out),
                      b = TensorStore::OpenModelDir(SharedPath(std::string("models/") + model));
    CHECK(a.ReadF32("model.layers.1.self_attn.k_proj.weight") !=
          b.ReadF32("model.layers.1.self_attn.k_proj.weight"));
    // The fold, read back from the weights of layer 0: each key row is its source row times one
    // factor, shared by the rotary pair (c, c + d/2); the group's query rows are divided by it;
    // the factors' range is the one recorded.
    const ModelConfig c = OpenCheckpoint(out).config;
    const auto k_out = a.ReadF32("model.layers.0.self_attn.k_proj.weight"),
               k_src = b.ReadF32("model.layers.0.self_attn.k_proj.weight");
    const auto q_out = a.ReadF32("model.layers.0.self_attn.q_proj.weight"),
               q_src = b.ReadF32("model.layers.0.self_attn.q_proj.weight");
    const std::size_t cols = static_cast<std::size_t>(c.hidden_size),
                      d = static_cast<std::size_t>(c.head_dim);
    auto row_factor = [&](const std::vector<float>& x, const std::vector<float>& y,
                          std::size_t row) {
      std::size_t best = 0;  // the largest source entry: the best-conditioned ratio
      for (std::size_t j = 0; j < cols; ++j)
        best = std::abs(y[row * cols + j]) > std::abs(y[row * cols + best]) ? j : best;
      return double(x[row * cols + best]) / y[row * cols + best];
    };
    double lo = 1e300, hi = 0;
    const std::size_t group =
        static_cast<std::size_t>(c.num_attention_heads / c.num_key_value_heads);
    for (std::size_t row = 0; row < static_cast<std::size_t>(c.num_key_value_heads) * d; ++row) {
      const double f = row_factor(k_out, k_src, row);
      lo = std::min(lo, f), hi = std::max(hi, f);
      const std::size_t partner = (row % d < d / 2) ? row + d / 2 : row - d / 2;
      CHECK(row_factor(k_out, k_src, partner) ==
            Approx(f).epsilon(1e-5));  // float32 weights: ~1e-7 per product
      for (std::size_t h = (row / d) * group; h < (row / d + 1) * group; ++h) {
        CHECK(row_factor(q_out, q_src, h * d + row % d) == Approx(1 / f).epsilon(1e-5));
      }
    }
    const auto meta = nlohmann::json::parse(ReadFileToString(out + "/kvfold.json"));
    CHECK(meta["passes"][0]["balance"][0]["factor_min"].get<double>() == Approx(lo).epsilon(1e-5));
    CHECK(meta["passes"][0]["balance"][0]["factor_max"].get<double>() == Approx(hi).epsilon(1e-5));
    CHECK(hi > lo * 1.01);  // real maxima differ per pair: constant factors would be a bug
  }
}

TEST_CASE("balance factors equalise the maxima; RoPE needs a factor per rotary pair",
          "[kv-quant]") {
  // Two query heads on one KV head, d = 4 (pairs (0,2) and (1,3)).
  const std::vector<float> qmax = {4, 1, 2, 9},
                           kmax = {1, 4};  // query pair maxima [2 x 2], key [1 x 2]
  const auto b = BalanceFactors(qmax, kmax, 2, 1, 4, 0.5, true);
  REQUIRE(b.size() == 4);
  CHECK(b[0] == Approx(std::sqrt(4.0 / 1.0)));  // max over the group's queries of pair 0 is 4
  CHECK(b[1] == Approx(std::sqrt(9.0 / 4.0)));
  CHECK(b[2] == b[0]);  // channel 2 is pair 0's partner
  CHECK(b[3] == b[1]);
  // After scaling, the largest query and key of each pair are equal.
  CHECK(4.0 / b[0] == Approx(1.0 * b[0]));
  CHECK(9.0 / b[1] == Approx(4.0 * b[1]));

  // alpha is the migration strength of b = (max|q| / max|k|)^alpha: 0 leaves the weights
  // alone, 1 swaps the maxima, and in between the key maximum becomes k^(1-a) q^a.
  for (double alpha : {0.0, 0.25, 1.0}) {
    INFO("alpha " << alpha);
    const auto f = BalanceFactors(qmax, kmax, 2, 1, 4, alpha, true);
    CHECK(f[0] == Approx(std::pow(4.0, alpha)));
    CHECK(1.0 * f[0] ==
          Approx(std::pow(1.0, 1 - alpha) * std::pow(4.0, alpha)));  // key max of pair 0
    CHECK(4.0 / f[0] ==
          Approx(std::pow(4.0, 1 - alpha) * std::pow(1.0, alpha)));  // query max of pair 0
    CHECK(4.0 * f[1] ==
          Approx(std::pow(4.0, 1 - alpha) * std::pow(9.0, alpha)));  // key max of pair 1
  }
  CHECK(BalanceFactors(qmax, kmax, 2, 1, 4, 0.0, true) ==
        std::vector<double>(4, 1.0));  // exactly the identity

  // Scores with and without RoPE (rotate_half): a factor per pair commutes with the rotation,
  // a factor per channel only without it.
  std::mt19937 rng(2);
  std::normal_distribution<double> n(0, 1);
  AttentionProjections p;
  p.heads = 2, p.kv_heads = 1, p.head_dim = 4, p.hidden = 3;
  for (auto* w : {&p.wq, &p.wk}) {
    w->resize(static_cast<std::size_t>((w == &p.wq ? 8 : 4) * 3));
    for (auto& x : *w) x = n(rng);
  }
  const std::vector<double> x = {0.3, -1.2, 0.7};
  auto project = [&](const std::vector<double>& w, std::int64_t row0) {
    std::vector<double> y(4, 0.0);
    for (int r = 0; r < 4; ++r) {
      for (int c = 0; c < 3; ++c)
        y[static_cast<std::size_t>(r)] +=
            w[static_cast<std::size_t>((row0 + r) * 3 + c)] * x[static_cast<std::size_t>(c)];
    }
    return y;
  };
  auto rope = [](std::vector<double> v, double angle) {
    for (int j = 0; j < 2; ++j) {
      const double theta = angle / std::pow(10.0, j);
      const double a = v[static_cast<std::size_t>(j)], c = v[static_cast<std::size_t>(j + 2)];
      v[static_cast<std::size_t>(j)] = a * std::cos(theta) - c * std::sin(theta);
      v[static_cast<std::size_t>(j + 2)] = c * std::cos(theta) + a * std::sin(theta);
    }
    return v;
  };
  auto score = [&](const AttentionProjections& w, bool with_rope) {
    const auto q =
        with_rope ? rope(project(w.wq, 4), 1.3) : project(w.wq, 4);  // query head 1 at position 13
    const auto k = with_rope ? rope(project(w.wk, 0), 0.4) : project(w.wk, 0);  // key at position 4
    double s = 0;
    for (int c = 0; c < 4; ++c)
      s += q[static_cast<std::size_t>(c)] * k[static_cast<std::size_t>(c)];
    return s;
  };
  const double plain = score(p, false), rotated = score(p, true);
  AttentionProjections per_channel = p, per_pair = p;
  FoldBalance(per_channel, {2.0, 0.5, 3.0, 1.5});  // untied: a non-RoPE balancer
  FoldBalance(per_pair, BalanceFactors(qmax, kmax, 2, 1, 4, 0.5, true));
  CHECK(score(per_channel, false) == Approx(plain).epsilon(1e-12));  // without RoPE: exact
  CHECK(std::abs(score(per_channel, true) - rotated) > 1e-3);        // with RoPE: broken
  CHECK(score(per_pair, true) == Approx(rotated).epsilon(1e-12));    // tied pairs: exact
}

TEST_CASE("kv-mixed writes the MiKV table with calibrated key ranges; the runtime reads it",
          "[kv-quant][shared]") {
  TempDir tmp;
  const std::string out = tmp.File("mixed");
  Convert(Options("stories260K", "kv-mixed<key-bits=2,value-bits=4,keep=0.25,protect=0,1>", out));
  const KvMixedTable t = ReadKvMixedTable(out + "/" + kKvMixedJson);
  CHECK(t.key_bits == 2);
  CHECK(t.value_bits == 4);
  CHECK(t.keep == 0.25);
  CHECK(t.key_axis == "channel");
  CHECK(t.protect == std::vector<int>{0, 1});
  CHECK(t.calibration_tokens == kCalibTokens);
  const Extremes truth = MeasureExtremes(Options("stories260K", "", ""));
  for (std::size_t l = 0; l < 5; ++l) {
    for (std::size_t ch = 0; ch < 32; ++ch) {
      // Two code paths (batched calibration vs one window at a time, other GEMM shapes): ~100
      // ulp, four orders of magnitude below a 2-bit quantization step of these ranges.
      CHECK(t.key_min[l * 32 + ch] == Approx(truth.key_lo[l][ch]).epsilon(1e-5).margin(1e-6));
      CHECK(t.key_max[l * 32 + ch] == Approx(truth.key_hi[l][ch]).epsilon(1e-5).margin(1e-6));
    }
  }
  const auto json = nlohmann::json::parse(ReadFileToString(out + "/" + kKvMixedJson));
  CHECK(json["schema"] == "kvfold-kv-mixed");
  CHECK(json["format_version"] == 1);
  CHECK(json["per_layer"][0]["quantized"] == false);
  CHECK(json["per_layer"][2]["key_bits"] == 2);
  const auto r =
      test::RunKvfold("eval " + out + " --text " + SharedPath("text/tinystories/eval.txt") +
                      " --max-windows 2 --quiet --json --kv-cache 'quant<scheme=mikv,table=" + out +
                      "/" + kKvMixedJson + ">'");
  INFO(r.err);
  REQUIRE(r.exit_code == 0);
  const auto j = nlohmann::json::parse(r.out);
  CHECK(j["kv_cache"]["spec"].get<std::string>().find("key-axis=channel,protect=0,1") !=
        std::string::npos);
  // MiKV's claim: keeping the important tokens in full precision costs less than quantizing
  // every token at the same low bits.
  const auto all_low = test::RunKvfold(
      "eval " + out + " --text " + SharedPath("text/tinystories/eval.txt") +
      " --max-windows 2 --quiet --json --kv-cache 'quant<scheme=rtn,key-bits=2,value-bits=4>'");
  REQUIRE(all_low.exit_code == 0);
  const auto low = nlohmann::json::parse(all_low.out);
  CHECK(j["compare"]["kl"].get<double>() > 0);
  CHECK(j["compare"]["kl"].get<double>() < low["compare"]["kl"].get<double>());
  CHECK(j["kv_cache"]["average_bits"].get<double>() >
        low["kv_cache"]["average_bits"].get<double>());
  CHECK(j["kv_cache"]["average_bits"].get<double>() < 16);
}

TEST_CASE("quantization passes refuse pipelines where calibration no longer describes the model",
          "[kv-quant][shared]") {
  TempDir tmp;
  // Calibrated on the source, statistics cannot describe K/V a pass has changed.
  ConvertJob on_source = Options("stories260K", "kv-balance,kv-scales", tmp.File("a"));
  on_source.calibrate_on = "source";
  CHECK_THROWS_WITH(
      Convert(on_source),
      Catch::Contains(
          "kv-scales needs calibration of the model it runs on, but kv-balance changes K/V"));
  on_source.passes = ParsePipeline("gqa-svd<kv-heads=2>,kv-mixed");
  CHECK_THROWS_WITH(Convert(on_source), Catch::Contains("kv-mixed needs calibration"));
  // Calibrated on the converted layers (the default), they are measured again after the change.
  CHECK_NOTHROW(Convert(Options("stories260K", "kv-balance,kv-scales", tmp.File("e"))));
  // Numbers already written cannot follow the heads a later pass would change, in either mode.
  CHECK_THROWS_WITH(
      Convert(Options("stories260K", "kv-scales,gqa-svd<kv-heads=2>", tmp.File("d"))),
      Catch::Contains("gqa-svd would change the K/V that kv-scales has just described"));
  CHECK_THROWS_WITH(Convert(Options("stories260K", "kv-mixed<hi-bits=8>", tmp.File("c"))),
                    Catch::Contains("hi-bits must be 16"));
}
