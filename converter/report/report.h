// The calibration report: report.json holds every number (schema kvfold-report, documented in
// docs/formats.md) and report.html renders exactly those numbers as one self-contained page
// (inline SVG, no scripts, no external resources).
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>

#include "calib/kv_statistics.h"

namespace kvfold {

// Per layer, the fraction of K (pre- and post-RoPE) and V energy kept by the top-k directions of
// each group of `group_size` KV heads, for k = 1 .. group_size * head_dim, averaged over groups.
nlohmann::ordered_json KvSpectra(const KvStatistics& statistics, std::int64_t group_size);
// The same built one layer at a time (a sweep that frees each layer's statistics): one layer's
// entry, then the section from every layer's entry in order.
nlohmann::ordered_json LayerKvSpectrum(const LayerKvStatistics& statistics, int layer,
                                       std::int64_t kv_heads, std::int64_t head_dim,
                                       std::int64_t group_size);
nlohmann::ordered_json KvSpectra(nlohmann::ordered_json layer_spectra, std::int64_t group_size,
                                 std::int64_t head_dim);

std::string RenderReportHtml(const nlohmann::ordered_json& report);

// The report's JSON beside `html_path`: the same name with .json for its extension.
std::string ReportJsonPath(const std::string& html_path);

// Refuses (Error naming it) a report path whose JSON companion would be the path itself
// (`-o r.json`): the report would overwrite its own data.
void CheckReportPath(const std::string& html_path);

// Writes `html_path` and, beside it, the same name with .json; both atomically.
void WriteReport(const std::string& html_path, const nlohmann::ordered_json& report);

// Peak resident set size of this process so far, in MiB.
double PeakRssMib();

}  // namespace kvfold
