#include <algorithm>
#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>

#include "converter/convert.h"
#include "converter/passes/norm_analysis_pass.h"
#include "formats/error.h"
#include "formats/eviction_table.h"
#include "formats/mapped_file.h"
#include "formats/tensor_store.h"
#include "tests/test_support.h"

using namespace kvfold;
using kvfold::test::SharedPath;
using kvfold::test::TempDir;

namespace {

ConvertJob Options(const std::string& passes, const std::string& out) {
  ConvertJob o;
  o.input.model = SharedPath("models/stories260K");
  o.input.calib_text = SharedPath("text/tinystories/calib.txt");
  o.passes = ParsePipeline(passes);
  o.output.path = out;
  o.input.calib_tokens = 4096;
  o.compute.threads = 2;
  o.compute.progress = false;
  return o;
}

}  // namespace

TEST_CASE("kv-norm-analysis writes a table that follows its stated rule",
          "[norm-analysis][shared]") {
  TempDir tmp;
  const std::string out = tmp.File("out");
  ConvertJob options = Options("kv-norm-analysis<budget=0.3,max-alr-ratio=1.5>", out);
  options.report.path = tmp.File("report.html");
  Convert(options);
  const EvictionTable t = ReadEvictionTable(out + "/" + kEvictionTableJson);
  CHECK(t.layers == 5);
  CHECK(t.kv_heads == 4);
  CHECK(t.windows == 16);
  CHECK(t.window == 256);
  CHECK(t.rule.find("1.5 * alr_random") != std::string::npos);

  // The safetensors measures, re-judged by the rule independently of the pass.
  const TensorStore store = TensorStore::OpenFile(out + "/" + kEvictionTableSafetensors);
  const std::vector<float> alr = store.ReadF32("alr"), alr_random = store.ReadF32("alr_random");
  const std::vector<float> loss = store.ReadF32("attention_loss_l2"),
                           ideal = store.ReadF32("attention_loss_ideal");
  const std::vector<float> grid = store.ReadF32("keep_grid");
  REQUIRE(grid.size() == 10);
  REQUIRE(loss.size() == 5 * 4 * 10);
  int skipped = 0, kept_less = 0;
  for (std::size_t h = 0; h < t.heads.size(); ++h) {
    INFO("head " << h);
    const EvictionTableHead& e = t.heads[h];
    CHECK(e.alr == Approx(alr[h]).epsilon(1e-5));
    CHECK(e.alr >= 0);
    CHECK(e.alr_random > 0);
    CHECK(e.skip == (alr[h] > 1.5 * alr_random[h]));
    double want_keep = 1.0;
    for (std::size_t r = 0; r < grid.size() && !e.skip; ++r) {
      if (loss[h * 10 + r] <= 0.3f + 1e-7f) {
        want_keep = grid[r];
        break;
      }
    }
    CHECK(e.keep == Approx(want_keep).epsilon(1e-6));
    for (std::size_t r = 0; r < grid.size(); ++r)
      CHECK(ideal[h * 10 + r] <= loss[h * 10 + r] + 1e-6f);  // ideal is a floor
    CHECK(loss[h * 10 + 9] == Approx(0.0).margin(1e-9));     // keeping all loses nothing
    skipped += e.skip;
    kept_less += e.keep < 1.0;
  }
  CHECK(skipped + kept_less > 0);  // the rule decided something on this model

  const auto meta = nlohmann::json::parse(ReadFileToString(out + "/kvfold.json"));
  CHECK(meta["passes"][0]["table"] == kEvictionTableJson);
  CHECK(meta["passes"][0]["heads"] == 20);

  // The report shows the per-layer/head analysis with the same verdicts as the table.
  const auto report = nlohmann::json::parse(ReadFileToString(tmp.File("report.json")));
  const auto& layers = report["passes"][0]["norm_layers"];
  REQUIRE(layers.size() == 5);
  CHECK(layers[2]["skip"][1] == t.at(2, 1).skip);
  CHECK(layers[2]["spearman"][1].get<double>() == Approx(t.at(2, 1).spearman).margin(1e-6));
  const std::string html = ReadFileToString(tmp.File("report.html"));
  CHECK(html.find("data-chart=\"norm-analysis\"") != std::string::npos);
  CHECK(html.find("first-token share") != std::string::npos);
}

TEST_CASE("kv-norm-analysis runs alone and its table is not carried into conversions",
          "[norm-analysis][shared]") {
  TempDir tmp;
  CHECK_THROWS_WITH(Convert(Options("kv-norm-analysis,gqa-svd<kv-heads=2>", tmp.File("a"))),
                    Catch::Contains("kv-norm-analysis runs alone"));
  const std::string analysed = tmp.File("analysed");
  Convert(Options("kv-norm-analysis", analysed));
  ConvertJob o = Options("gqa-svd<kv-heads=2>", tmp.File("gqa"));
  o.input.model = analysed;
  Convert(o);
  const auto files = kvfold::test::ListDir(tmp.File("gqa"));
  CHECK(std::find(files.begin(), files.end(), kEvictionTableJson) == files.end());
  CHECK(std::find(files.begin(), files.end(), kEvictionTableSafetensors) == files.end());
}

TEST_CASE("eviction tables: malformed files are refused naming the file", "[norm-analysis]") {
  TempDir tmp;
  const std::string path = tmp.File("t.json");
  kvfold::test::WriteBytes(path, "{\"schema\":\"something-else\",\"format_version\":1}");
  CHECK_THROWS_WITH(ReadEvictionTable(path),
                    Catch::StartsWith(path + ": not a kvfold eviction policy table"));
  kvfold::test::WriteBytes(
      path, R"({"schema":"kvfold-eviction-policy","format_version":1,"layers":1,"kv_heads":2,
    "rule":"r","budget":0.1,"calibration":{"windows":1,"window":8},"keep_grid":[1.0],"heads":[{"layer":0,"kv_head":0,"spearman":0,"alr":0,"alr_random":0,"sink_share":0,"keep":0.5,"skip":false}]})");
  CHECK_THROWS_WITH(ReadEvictionTable(path),
                    Catch::Contains("not every (layer, kv_head) has an entry"));
  kvfold::test::WriteBytes(path, "{");
  CHECK_THROWS_WITH(ReadEvictionTable(path), Catch::StartsWith(path + ": not valid JSON"));
}
