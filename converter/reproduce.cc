// kvfold convert --reproduce OLD/kvfold.json: the job of a recorded conversion.
#include <cstdio>
#include <nlohmann/json.hpp>

#include "converter/convert.h"
#include "formats/error.h"
#include "formats/json_file.h"
#include "formats/version.h"

namespace kvfold {
namespace {

using nlohmann::json;

const json& Field(const json& doc, const char* key, const std::string& path) {
  if (!doc.is_object() || !doc.contains(key))
    Fail(path, std::string("missing field '") + key + "'");
  return doc[key];
}

// The recorded pipeline text as a pipeline; a text this kvfold does not parse names the file.
PipelineSpec RecordedPipeline(const std::string& text, const std::string& kvfold_json) {
  try {
    return ParsePipeline(text);
  } catch (const Error& e) {
    Fail(kvfold_json, std::string("pipeline: ") + e.what());
  }
}

}  // namespace

ConvertJob ReproduceJob(const std::string& kvfold_json, const ConvertJob& given) {
  const json doc = ReadJsonFile(kvfold_json);
  ConvertJob o = given;
  try {
    const json& format = Field(doc, "format_version", kvfold_json);
    if (format != 1) {
      Fail(kvfold_json, "format_version " + format.dump() + " is not one this kvfold reads (1)");
    }
    const std::string version = Field(doc, "kvfold_version", kvfold_json).get<std::string>();
    if (version != kVersion) {  // text from a file reaches the terminal escaped, as errors do
      std::fprintf(stderr,
                   "kvfold: note: %s was written by kvfold %s, this is %s: the output may differ\n",
                   Printable(kvfold_json).c_str(), Printable(version).c_str(), kVersion);
    }
    const json& source = Field(doc, "source", kvfold_json);
    const json& calib = Field(doc, "calibration", kvfold_json);
    o.passes =
        RecordedPipeline(Field(doc, "pipeline", kvfold_json).get<std::string>(), kvfold_json);
    InputPart& in = o.input;
    if (in.model.empty()) in.model = Field(source, "path", kvfold_json).get<std::string>();
    if (in.calib_text.empty()) in.calib_text = Field(calib, "file", kvfold_json).get<std::string>();
    o.expected_source_sha256 = Field(source, "sha256", kvfold_json).get<std::string>();
    o.expected_calib_sha256 = Field(calib, "sha256", kvfold_json).get<std::string>();
    in.calib_tokens = Field(calib, "tokens", kvfold_json).get<std::int64_t>();
    const std::int64_t window = Field(calib, "window", kvfold_json).get<std::int64_t>();
    if (window < 2 || window > (1 << 20)) {
      Fail(kvfold_json, "calibration.window " + std::to_string(window) + " is not 2 to 1048576");
    }
    in.window = static_cast<int>(window);
    // Outputs written before kvfold calibrated on converted layers were calibrated on the source.
    o.calibrate_on =
        calib.contains("activations") ? calib["activations"].get<std::string>() : "source";
    if (o.calibrate_on != "converted" && o.calibrate_on != "source") {
      Fail(kvfold_json, "calibration.activations must be converted or source");
    }
    // A --kv-budget conversion reruns its recorded plan's passes and records the plan again.
    if (doc.contains("plan")) o.plan_json = doc["plan"].dump();
    // Calibration sums are joined per thread: the same count gives the same bytes.
    const std::int64_t threads =
        calib.contains("threads") ? calib["threads"].get<std::int64_t>() : 0;
    if (threads < 0 || threads > 4096) {
      Fail(kvfold_json, "calibration.threads " + std::to_string(threads) + " is not 0 to 4096");
    }
    if (threads > 0 && given.compute.threads == 0) o.compute.threads = static_cast<int>(threads);
  } catch (const json::exception& e) {
    Fail(kvfold_json, std::string("unexpected value (") + e.what() + ")");
  }
  return o;
}

}  // namespace kvfold
