#include "converter/export_model.h"

#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <optional>

#include "converter/export/gguf_exporter.h"
#include "converter/export/gguf_model.h"
#include "converter/passes/model_draft.h"
#include "formats/error.h"
#include "formats/json_file.h"
#include "formats/owned_folder.h"
#include "formats/staged_folder.h"

namespace kvfold {
namespace {

// A kvfold output's kvfold.json travels with it; any other folder records no conversion.
std::optional<nlohmann::ordered_json> Provenance(const std::string& dir) {
  const std::string path = dir + "/kvfold.json";
  if (::access(path.c_str(), F_OK) != 0) return std::nullopt;
  if (const std::string why = NotKvfoldOutput(dir); !why.empty()) return std::nullopt;
  const nlohmann::json j = ReadJsonFile(path);
  return nlohmann::ordered_json::parse(j.dump());
}

std::uint64_t SizeOf(const std::string& path) {
  std::uint64_t total = 0;
  std::error_code ec;
  if (std::filesystem::is_regular_file(path, ec)) return std::filesystem::file_size(path, ec);
  for (const auto& e : std::filesystem::directory_iterator(path, ec)) {
    if (e.is_regular_file(ec)) total += e.file_size(ec);
  }
  return total;
}

}  // namespace

ExportResult ExportModel(const ExportJob& job) {
  const auto t0 = std::chrono::steady_clock::now();
  if (job.output.empty()) Fail("-o", "an output is required");
  const Checkpoint ck = OpenCheckpoint(job.model);
  const std::optional<nlohmann::ordered_json> provenance = Provenance(job.model);
  ExportResult result;
  std::optional<StagedFolder> staging;
  std::string target = job.output;
  if (job.options.format == OutputFormat::kGguf) {
    result.architecture = GgufArchitecture(ck.config, job.model);
    CheckGgufOutputPath(job.output, job.force);
  } else {
    result.architecture = ck.config.architecture;
    staging.emplace(job.output, job.force);
    target = staging->path();
  }
  ModelDraft draft(ck);
  draft.OpenOutput(MakeExporter(target, ck, job.options));
  draft.WriteRemaining();
  result.not_copied = draft.NotCopied();
  result.files = draft.FinishOutput(provenance ? &*provenance : nullptr);
  if (staging) staging->Commit();
  result.bytes = SizeOf(job.output);
  result.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return result;
}

}  // namespace kvfold
