// Helpers shared by the converter's end-to-end tests: run a conversion on a shared model, and
// compare two checkpoints' logits on a fixed probe.
#pragma once

#include <algorithm>
#include <catch2/catch.hpp>
#include <cmath>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "converter/analyze.h"
#include "converter/convert.h"
#include "formats/checkpoint.h"
#include "formats/mapped_file.h"
#include "runtime_check/reference_model.h"
#include "tests/test_support.h"

namespace kvfold::test {

inline std::string CalibFor(const std::string& model) {
  return SharedPath(model.rfind("stories", 0) == 0 ? "text/tinystories/calib.txt"
                                                   : "text/wikitext-2/valid.tokens.txt");
}

inline ConvertResult RunConvert(const std::string& model, const std::string& passes,
                                const std::string& out, std::int64_t calib_tokens = 8192) {
  ConvertJob o;
  o.input.model = SharedPath("models/" + model);
  o.input.calib_text = CalibFor(model);
  o.passes = ParsePipeline(passes);
  o.output.path = out;
  o.input.calib_tokens = calib_tokens;
  o.compute.threads = 2;
  o.compute.progress = false;
  return Convert(o);
}

// kvfold report on stories260K (4096 calibration tokens) with a KV plan at 25% of the cache,
// the report at `html`, quiet.
inline ReportJob StoriesQuarterBudgetReport(const std::string& html) {
  ReportJob o;
  o.input.model = SharedPath("models/stories260K");
  o.input.calib_text = CalibFor("stories260K");
  o.input.calib_tokens = 4096;
  o.report.path = html;
  o.plan_budgets = {0.25};
  o.compute.threads = 2;
  o.compute.progress = false;
  return o;
}

// Pipeline texts in canonical form (every parameter in force), "" kept as the empty pipeline.
inline std::vector<std::string> CanonicalPipelines(const std::vector<std::string>& texts) {
  std::vector<std::string> out;
  for (const auto& t : texts) out.push_back(t.empty() ? t : PipelineText(ParsePipeline(t)));
  return out;
}

inline std::vector<std::int32_t> Probe() {
  std::vector<std::int32_t> ids = {1};
  for (int i = 1; i < 96; ++i) ids.push_back(3 + (i * 37) % 500);
  return ids;
}

inline double MaxLogitDiff(const std::string& a_dir, const std::string& b_dir) {
  const Checkpoint a = OpenCheckpoint(a_dir), b = OpenCheckpoint(b_dir);
  const auto la = ReferenceModel::Load(a, {"cpu", 2})->Logits(Probe());
  const auto lb = ReferenceModel::Load(b, {"cpu", 2})->Logits(Probe());
  REQUIRE(la.size() == lb.size());
  double worst = 0;
  for (std::size_t i = 0; i < la.size(); ++i)
    worst = std::max(worst, double(std::abs(la[i] - lb[i])));
  return worst;
}

inline nlohmann::json ReadJson(const std::string& path) {
  return nlohmann::json::parse(ReadFileToString(path));
}

}  // namespace kvfold::test
