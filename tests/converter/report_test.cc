#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>

#include "converter/convert.h"
#include "formats/mapped_file.h"
#include "tests/test_support.h"

using namespace kvfold;
using kvfold::test::RunKvfold;
using kvfold::test::SharedPath;
using kvfold::test::TempDir;

namespace {

std::size_t Count(const std::string& haystack, const std::string& needle) {
  std::size_t n = 0;
  for (auto p = haystack.find(needle); p != std::string::npos; p = haystack.find(needle, p + 1))
    ++n;
  return n;
}

}  // namespace

TEST_CASE("a conversion report: schema, self-contained page, numbers equal kvfold eval",
          "[report][shared]") {
  TempDir tmp;
  ConvertJob o;
  o.input.model = SharedPath("models/stories260K");
  o.input.calib_text = SharedPath("text/tinystories/calib.txt");
  o.passes = ParsePipeline("gqa-svd<kv-heads=2>");
  o.output.path = tmp.File("out");
  o.input.calib_tokens = 8192;
  o.compute.threads = 2;
  o.compute.progress = false;
  o.report.path = tmp.File("report.html");
  o.report.eval_text = SharedPath("text/tinystories/eval.txt");
  o.report.eval_windows = 8;
  Convert(o);

  const auto r = nlohmann::json::parse(ReadFileToString(tmp.File("report.json")));
  CHECK(r["schema"] == "kvfold-report");
  CHECK(r["format_version"] == 1);
  CHECK(r["model"]["kv_bytes_per_token"] == 1280);
  CHECK(r["output"]["kv_bytes_per_token"] == 640);
  CHECK(r["run"]["pipeline"] ==
        "gqa-svd<kv-heads=2,qk-norm=exact,refit=o,ridge=auto,rope=commute,value-weight=none,weight="
        "query>");
  CHECK(r["run"]["calibration"]["tokens"] == 8192);
  CHECK(r["run"]["peak_rss_mib"].get<double>() > 0);
  CHECK(r["passes"][0]["layers"].size() == 5);

  // Spectra: per layer, cumulative fractions over t*d = 2*8 directions, rising to 1.
  const auto& sp = r["spectra"];
  CHECK(sp["group_size"] == 2);
  REQUIRE(sp["layers"].size() == 5);
  for (const auto& layer : sp["layers"]) {
    for (const char* key : {"value", "key_pre_rope", "key_post_rope"}) {
      const auto v = layer[key].get<std::vector<double>>();
      REQUIRE(v.size() == 16);
      for (std::size_t i = 1; i < v.size(); ++i) CHECK(v[i] >= v[i - 1] - 1e-12);
      CHECK(v.back() == Approx(1.0));
    }
  }

  // The validation numbers are exactly what kvfold eval prints for the same windows.
  const auto e =
      RunKvfold("eval " + tmp.File("out") + " --text " + o.report.eval_text +
                " --max-windows 8 --threads 2 --quiet --json --compare " + o.input.model);
  REQUIRE(e.exit_code == 0);
  const auto ev = nlohmann::json::parse(e.out);
  const auto& v = r["validation"];
  CHECK(v["tokens_predicted"] == ev["tokens_predicted"]);
  CHECK(v["converted"]["ppl"].get<double>() == Approx(ev["ppl"].get<double>()).epsilon(1e-12));
  CHECK(v["original"]["ppl"].get<double>() ==
        Approx(ev["compare"]["ppl"].get<double>()).epsilon(1e-12));
  CHECK(v["kl"].get<double>() == Approx(ev["compare"]["kl"].get<double>()).epsilon(1e-12));
  CHECK(v["top1_agreement"] == ev["compare"]["top1_agreement"]);

  // One self-contained page: a chart per layer plus the pass chart, nothing fetched, no script.
  const std::string html = ReadFileToString(tmp.File("report.html"));
  CHECK(Count(html, "<svg class=\"chart\"") == 5 + 1);
  CHECK(html.find("<script") == std::string::npos);
  CHECK(html.find("http://") == std::string::npos);
  CHECK(html.find("https://") == std::string::npos);
  CHECK(html.find("id=\"summary\"") != std::string::npos);
}

TEST_CASE("kvfold report analyses a model without converting it", "[report][shared]") {
  TempDir tmp;
  const auto r = RunKvfold(
      "report " + SharedPath("models/micro-mha") + " --calib " +
      SharedPath("text/wikitext-2/valid.tokens.txt") + " --calib-tokens 4096 --eval " +
      SharedPath("text/wikitext-2/test.raw.txt") + " --eval-windows 4 -o " + tmp.File("r.html"));
  INFO(r.err);
  REQUIRE(r.exit_code == 0);
  const auto j = nlohmann::json::parse(ReadFileToString(tmp.File("r.json")));
  CHECK_FALSE(j.contains("output"));
  CHECK(j["spectra"]["group_size"] == 2);
  CHECK(j["spectra"]["layers"][0]["value"].size() == 64);
  CHECK(j["validation"]["original"]["ppl"].get<double>() > 1);
  CHECK(test::ListDir(tmp.path()) == std::vector<std::string>{"r.html", "r.json"});
}
