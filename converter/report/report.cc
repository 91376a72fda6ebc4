#include "converter/report/report.h"

#include <sys/resource.h>
#include <sys/stat.h>

#include <algorithm>
#include <cstdio>
#include <sstream>

#include "converter/passes/linalg.h"
#include "converter/report/plan_section.h"
#include "converter/report/svg_chart.h"
#include "formats/atomic_file.h"
#include "formats/error.h"
#include "formats/json_file.h"

namespace kvfold {
namespace {

using nlohmann::ordered_json;

// Mean over groups of the cumulative energy fraction of the descending eigenvalues.
std::vector<double> CumulativeEnergy(const std::vector<double>& moment, std::int64_t dim,
                                     std::int64_t group_dim) {
  std::vector<double> mean(static_cast<std::size_t>(group_dim), 0.0);
  const std::int64_t groups = dim / group_dim;
  for (std::int64_t g = 0; g < groups; ++g) {
    Matrix block(group_dim, group_dim);
    for (std::int64_t i = 0; i < group_dim; ++i) {
      for (std::int64_t j = 0; j < group_dim; ++j) {
        block(i, j) =
            moment[static_cast<std::size_t>((g * group_dim + i) * dim + g * group_dim + j)];
      }
    }
    const SymmetricEigen e = EigenSymmetric(block);
    double total = 0;
    for (double v : e.values) total += std::max(0.0, v);
    double running = 0;
    for (std::int64_t k = 0; k < group_dim; ++k) {
      running += std::max(0.0, e.values[static_cast<std::size_t>(k)]);
      mean[static_cast<std::size_t>(k)] +=
          (total > 0 ? running / total : 1.0) / static_cast<double>(groups);
    }
  }
  return mean;
}

std::string Fixed(double v, int digits) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.*f", digits, v);
  return buf;
}

std::string Row(const std::vector<std::string>& cells, bool header = false) {
  std::string o = "<tr>";
  for (const auto& c : cells) o += (header ? "<th>" : "<td>") + c + (header ? "</th>" : "</td>");
  return o + "</tr>";
}

const char* kStyle = R"(
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",sans-serif;margin:24px auto;max-width:1180px;color:#1d2330;padding:0 16px}
h1{font-size:22px;margin:0 0 4px} h2{font-size:17px;margin:28px 0 8px;border-bottom:1px solid #dde2ea;padding-bottom:4px}
.sub{color:#5b6472;margin-bottom:14px}
.summary{display:flex;flex-wrap:wrap;gap:12px;background:#f4f7fb;border:1px solid #d6deea;border-radius:8px;padding:14px}
.kpi{min-width:170px}.kpi .v{font-size:22px;font-weight:600}.kpi .l{color:#5b6472;font-size:12px}
table{border-collapse:collapse;margin:6px 0}td,th{border:1px solid #dde2ea;padding:3px 9px;text-align:right}
th{background:#f4f7fb}td:first-child,th:first-child{text-align:left}
.charts{display:flex;flex-wrap:wrap;gap:8px}
svg.chart{background:#fff;border:1px solid #e3e7ee;border-radius:6px}
svg .title{font-size:12px;font-weight:600;text-anchor:middle}
svg .xtick{font-size:10px;text-anchor:middle;fill:#5b6472} svg .ytick{font-size:10px;text-anchor:end;fill:#5b6472}
svg .xlabel,svg .ylabel{font-size:11px;text-anchor:middle;fill:#333} svg .legend{font-size:10px;fill:#333}
svg .grid{stroke:#eef1f5} svg .axis{stroke:#8a93a3} svg .marker{stroke:#c0392b;stroke-dasharray:4 3}
code{background:#f4f7fb;padding:1px 4px;border-radius:3px}
)";

std::string Kpi(const std::string& value, const std::string& label) {
  return "<div class=\"kpi\"><div class=\"v\">" + value + "</div><div class=\"l\">" + label +
         "</div></div>";
}

}  // namespace

ordered_json LayerKvSpectrum(const LayerKvStatistics& st, int layer, std::int64_t kv_heads,
                             std::int64_t head_dim, std::int64_t group_size) {
  const std::int64_t group_dim = group_size * head_dim, dim = kv_heads * head_dim;
  ordered_json spectrum = {{"layer", layer}};
  if (!st.value.empty()) spectrum["value"] = CumulativeEnergy(st.value, dim, group_dim);
  if (!st.key_pre_rope.empty())
    spectrum["key_pre_rope"] = CumulativeEnergy(st.key_pre_rope, dim, group_dim);
  if (!st.key_post_rope.empty())
    spectrum["key_post_rope"] = CumulativeEnergy(st.key_post_rope, dim, group_dim);
  return spectrum;
}

ordered_json KvSpectra(ordered_json layer_spectra, std::int64_t group_size, std::int64_t head_dim) {
  return {{"group_size", group_size}, {"head_dim", head_dim}, {"layers", std::move(layer_spectra)}};
}

ordered_json KvSpectra(const KvStatistics& s, std::int64_t group_size) {
  ordered_json layers = ordered_json::array();
  for (std::size_t l = 0; l < s.layers.size(); ++l) {
    layers.push_back(
        LayerKvSpectrum(s.layers[l], static_cast<int>(l), s.kv_heads, s.head_dim, group_size));
  }
  return KvSpectra(std::move(layers), group_size, s.head_dim);
}

// kv-scales and kv-balance: one row per layer.
std::string QuantPassSection(const ordered_json& p) {
  std::ostringstream o;
  o << "<h2>Pass <code>" << EscapeHtml(p["pass"].get<std::string>()) << "</code></h2><table>";
  auto list = [](const ordered_json& a) {
    std::string s;
    for (const auto& x : a) s += (s.empty() ? "" : " ") + Fixed(x.get<double>(), 6);
    return s;
  };
  if (p.contains("scales")) {
    o << Row({"layer", "k_scale (amax / 448)", "v_scale (amax / 448)"}, true);
    for (const auto& l : p["scales"])
      o << Row({std::to_string(l["layer"].get<int>()), list(l["k_scale"]), list(l["v_scale"])});
    o << "</table><p>Static FP8 e4m3 scales as vLLM reads them (compressed-tensors "
         "<code>kv_cache_scheme</code>, strategy "
      << EscapeHtml(p["strategy"].get<std::string>()) << ").</p>";
  } else {
    o << Row(
        {"layer", "smallest factor", "largest factor", "key outliers before", "key outliers after"},
        true);
    for (const auto& l : p["balance"]) {
      o << Row({std::to_string(l["layer"].get<int>()), Fixed(l["factor_min"].get<double>(), 3),
                Fixed(l["factor_max"].get<double>(), 3),
                Fixed(l["key_outlier_ratio_before"].get<double>(), 2),
                Fixed(l["key_outlier_ratio_after"].get<double>(), 2)});
    }
    o << "</table><p>Key outliers: the largest rotary-pair maximum over the median one, per layer. "
         "Factors b multiply "
         "the keys and divide the queries (alpha "
      << Fixed(p["alpha"].get<double>(), 2) << ").</p>";
  }
  return o.str();
}

// kv-norm-analysis: per layer, how well key norms predict attention, then every head's verdict.
std::string NormAnalysisSection(const ordered_json& p) {
  std::ostringstream o;
  o << "<h2>Pass <code>" << EscapeHtml(p["pass"].get<std::string>())
    << "</code></h2><p>Key L2 norm vs attention "
    << "received (arXiv 2406.11430). The paper expects a <b>negative</b> Spearman correlation "
       "(low-norm keys draw "
    << "attention) and an ALR well below a random order's. Rule: "
    << EscapeHtml(p["rule"].get<std::string>()) << ". Table: <code>"
    << EscapeHtml(p["table"].get<std::string>()) << "</code>.</p>";
  auto mean = [](const ordered_json& a) {
    double s = 0;
    for (const auto& x : a) s += x.get<double>();
    return a.empty() ? 0.0 : s / static_cast<double>(a.size());
  };
  std::vector<std::string> cats;
  Series rho{"Spearman", "#2c7be5", {}}, ratio{"ALR / random", "#e67e22", {}},
      sink{"first-token share", "#7f8c8d", {}};
  double y_min = 0, y_max = 1;
  for (const auto& l : p["norm_layers"]) {
    cats.push_back(std::to_string(l["layer"].get<int>()));
    rho.points.push_back({0, mean(l["spearman"])});
    ratio.points.push_back({0, mean(l["alr_over_random"])});
    sink.points.push_back({0, mean(l["sink_share"])});
    y_min = std::min({y_min, rho.points.back().second});
    y_max = std::max({y_max, ratio.points.back().second, rho.points.back().second});
  }
  ChartAxes a;
  a.title = "per layer (mean over KV heads)";
  a.x_label = "layer";
  a.y_label = "value";
  a.y_min = y_min;
  a.y_max = y_max;
  o << "<div class=\"charts\">" << BarChart("norm-analysis", a, cats, {rho, ratio, sink})
    << "</div>";
  o << "<table>"
    << Row({"layer", "KV head", "Spearman", "ALR / random", "first-token share", "keep", "skip"},
           true);
  for (const auto& l : p["norm_layers"]) {
    for (std::size_t g = 0; g < l["spearman"].size(); ++g) {
      o << Row({std::to_string(l["layer"].get<int>()), std::to_string(g),
                Fixed(l["spearman"][g].get<double>(), 3),
                Fixed(l["alr_over_random"][g].get<double>(), 2),
                Fixed(l["sink_share"][g].get<double>(), 3), Fixed(l["keep"][g].get<double>(), 1),
                l["skip"][g].get<bool>() ? "yes" : "no"});
    }
  }
  o << "</table>";
  return o.str();
}

std::string RenderReportHtml(const ordered_json& r) {
  const auto& model = r["model"];
  std::ostringstream o;
  o << "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>kvfold report: "
    << EscapeHtml(model["path"].get<std::string>()) << "</title><style>" << kStyle
    << "</style></head><body>";
  o << "<h1>kvfold calibration report</h1><div class=\"sub\">"
    << EscapeHtml(model["path"].get<std::string>());
  if (r.contains("run") && !r["run"]["pipeline"].get<std::string>().empty()) {
    o << " &rarr; <code>" << EscapeHtml(r["run"]["pipeline"].get<std::string>()) << "</code>";
  }
  o << " &middot; kvfold " << EscapeHtml(r["kvfold_version"].get<std::string>()) << "</div>";

  // Summary: the verdict numbers first.
  o << "<div class=\"summary\" id=\"summary\">";
  const double bytes_before = model["kv_bytes_per_token"].get<double>();
  if (r.contains("output")) {
    const double after = r["output"]["kv_bytes_per_token"].get<double>();
    o << Kpi(Fixed(bytes_before, 0) + " &rarr; " + Fixed(after, 0), "KV-cache bytes per token")
      << Kpi(Fixed(bytes_before / after, 2) + "&times;", "KV-cache reduction");
  } else {
    o << Kpi(Fixed(bytes_before, 0), "KV-cache bytes per token");
  }
  if (r.contains("validation")) {
    const auto& v = r["validation"];
    if (v.contains("converted")) {
      o << Kpi(Fixed(v["original"]["ppl"].get<double>(), 3) + " &rarr; " +
                   Fixed(v["converted"]["ppl"].get<double>(), 3),
               "perplexity (original &rarr; converted)")
        << Kpi(Fixed(v["kl"].get<double>(), 4), "KL(original || converted), nats/token")
        << Kpi(Fixed(100 * v["top1_agreement"].get<double>(), 2) + "%", "top-1 agreement");
    } else {
      o << Kpi(Fixed(v["original"]["ppl"].get<double>(), 3), "perplexity");
    }
  }
  o << "</div>";

  // Model and run.
  o << "<h2>Model and run</h2><table>";
  o << Row({"architecture", EscapeHtml(model["architecture"].get<std::string>())});
  o << Row({"layers", std::to_string(model["layers"].get<int>())});
  o << Row({"query heads / KV heads / head dim", std::to_string(model["heads"].get<int>()) + " / " +
                                                     model["kv_heads"].dump() + " / " +
                                                     std::to_string(model["head_dim"].get<int>())});
  if (r.contains("run")) {
    const auto& run = r["run"];
    const auto& cal = run["calibration"];
    o << Row({"calibration text", EscapeHtml(cal["file"].get<std::string>())});
    o << Row({"calibration sha256", "<code>" + cal["sha256"].get<std::string>() + "</code>"});
    o << Row({"calibration tokens", std::to_string(cal["tokens"].get<std::int64_t>())});
    for (const auto& t : run["timings"]) {
      o << Row({"time: " + EscapeHtml(t["stage"].get<std::string>()),
                Fixed(t["seconds"].get<double>(), 3) + " s"});
    }
    o << Row({"total wall time", Fixed(run["total_seconds"].get<double>(), 3) + " s"});
    o << Row({"peak RSS", Fixed(run["peak_rss_mib"].get<double>(), 0) + " MiB"});
  }
  o << "</table>";

  // Spectra.
  if (r.contains("spectra")) {
    const auto& sp = r["spectra"];
    const std::int64_t d = sp["head_dim"].get<std::int64_t>(),
                       t = sp["group_size"].get<std::int64_t>();
    o << "<h2>KV spectra</h2><p>Fraction of calibration energy kept by the top <i>k</i> directions "
         "of "
         "each group of "
      << t << " KV heads (mean over groups). The dashed line is <i>k</i> = " << d
      << ", what one KV head per group keeps.</p><div class=\"charts\">";
    for (const auto& layer : sp["layers"]) {
      std::vector<Series> series;
      auto add = [&](const char* key, const char* name, const char* color) {
        if (!layer.contains(key)) return;
        Series s{name, color, {}};
        const auto& v = layer[key];
        for (std::size_t k = 0; k < v.size(); ++k)
          s.points.push_back({double(k + 1), v[k].get<double>()});
        series.push_back(s);
      };
      add("value", "V", "#2c7be5");
      add("key_pre_rope", "K pre-RoPE", "#e67e22");
      add("key_post_rope", "K post-RoPE", "#27ae60");
      ChartAxes a;
      a.title = "layer " + std::to_string(layer["layer"].get<int>());
      a.x_label = "directions kept per group";
      a.y_label = "energy kept (fraction)";
      a.x_min = 0;
      a.x_max = static_cast<double>(t * d);
      a.x_markers = {static_cast<double>(d)};
      o << LineChart("spectrum-" + std::to_string(layer["layer"].get<int>()), a, series);
    }
    o << "</div>";
  }

  // What each pass did.
  if (r.contains("passes")) {
    for (const auto& p : r["passes"]) {
      if (p.contains("norm_layers")) {
        o << NormAnalysisSection(p);
        continue;
      }
      if (p.contains("scales") || p.contains("balance")) {
        o << QuantPassSection(p);
        continue;
      }
      if (!p.contains("layers")) {
        o << "<h2>Pass <code>" << EscapeHtml(p["pass"].get<std::string>())
          << "</code></h2><p>No per-layer record.</p>";
        continue;
      }
      o << "<h2>Pass <code>" << EscapeHtml(p["pass"].get<std::string>()) << "</code></h2>";
      std::vector<std::string> cats;
      Series v{"V energy kept", "#2c7be5", {}}, k{"K energy kept", "#e67e22", {}};
      struct LayerRow {
        int layer;
        double v, k;
      };
      std::vector<LayerRow> rows;
      for (const auto& l : p["layers"]) {
        auto mean = [](const ordered_json& a) {
          double s = 0;
          for (const auto& x : a) s += x.get<double>();
          return a.empty() ? 0.0 : s / static_cast<double>(a.size());
        };
        rows.push_back(
            {l["layer"].get<int>(), mean(l["value_energy_kept"]), mean(l["key_energy_kept"])});
        cats.push_back(std::to_string(rows.back().layer));
        v.points.push_back({0, rows.back().v});
        k.points.push_back({0, rows.back().k});
      }
      ChartAxes a;
      a.title = "energy kept per layer (mean over groups)";
      a.x_label = "layer";
      a.y_label = "fraction";
      o << "<div class=\"charts\">" << BarChart("pass-energy", a, cats, {v, k}) << "</div>";
      // Worst layers first: that is where quality goes.
      std::sort(rows.begin(), rows.end(), [](const LayerRow& x, const LayerRow& y) {
        return std::min(x.v, x.k) < std::min(y.v, y.k);
      });
      // Energy kept is 1 - the relative squared reconstruction error on the calibration data.
      o << "<table>"
        << Row({"layer (worst first)", "V energy kept", "K energy kept", "V reconstruction error",
                "K reconstruction error"},
               true);
      for (const auto& row : rows) {
        o << Row({std::to_string(row.layer), Fixed(row.v, 4), Fixed(row.k, 4), Fixed(1 - row.v, 4),
                  Fixed(1 - row.k, 4)});
      }
      o << "</table><p>Reconstruction error: relative squared error of the group's K or V "
           "activations on the calibration data (1 &minus; energy kept). Per-group values are in "
           "report.json.</p>";
    }
  }

  if (r.contains("plan")) o << PlanSection(r["plan"]);

  // Validation.
  if (r.contains("validation")) {
    const auto& v = r["validation"];
    o << "<h2>Validation</h2><p>kvfold-ppl-v1 on " << EscapeHtml(v["text"].get<std::string>())
      << ": " << v["windows"].get<int>() << " windows, "
      << v["tokens_predicted"].get<std::int64_t>() << " tokens predicted.</p><table>"
      << Row({"model", "ppl", "mean NLL (nats)", "KV bytes/token"}, true)
      << Row({"original", Fixed(v["original"]["ppl"].get<double>(), 4),
              Fixed(v["original"]["mean_nll"].get<double>(), 6), Fixed(bytes_before, 0)});
    if (v.contains("converted")) {
      o << Row({"converted", Fixed(v["converted"]["ppl"].get<double>(), 4),
                Fixed(v["converted"]["mean_nll"].get<double>(), 6),
                Fixed(r["output"]["kv_bytes_per_token"].get<double>(), 0)})
        << "</table><table>" << Row({"comparison", "value"}, true)
        << Row({"KL(original || converted), nats/token", Fixed(v["kl"].get<double>(), 6)})
        << Row({"top-1 agreement", Fixed(100 * v["top1_agreement"].get<double>(), 2) + "%"})
        << Row({"delta NLL, nats/token", Fixed(v["delta_nll"].get<double>(), 6)});
    }
    o << "</table>";
  }
  o << "</body></html>\n";
  return o.str();
}

std::string ReportJsonPath(const std::string& html_path) {
  const std::size_t dot = html_path.rfind('.');
  const std::size_t slash = html_path.rfind('/');
  const bool has_extension =
      dot != std::string::npos && (slash == std::string::npos || dot > slash);
  return (has_extension ? html_path.substr(0, dot) : html_path) + ".json";
}

namespace {

// Whether `path` holds a report JSON kvfold wrote (schema kvfold-report), which a new report
// may replace; anything else at that name is the user's.
bool IsKvfoldReportJson(const std::string& path) {
  try {
    const nlohmann::json doc = ReadJsonFile(path);  // depth-checked, parsed, or an Error
    return doc.is_object() && doc.contains("schema") && doc["schema"] == "kvfold-report";
  } catch (const Error&) {
    return false;
  }
}

}  // namespace

void CheckReportPath(const std::string& html_path) {
  const std::string json = ReportJsonPath(html_path);
  if (json == html_path) {
    Fail(html_path,
         "is where the report's JSON goes (beside the HTML, named with .json); name "
         "the HTML report .html");
  }
  struct stat st {};
  if (::lstat(json.c_str(), &st) != 0) return;
  if (!S_ISREG(st.st_mode) || st.st_size > (std::int64_t{256} << 20) || !IsKvfoldReportJson(json)) {
    Fail(json,
         "exists and is not a report kvfold wrote; the report would replace it (choose "
         "another report name)");
  }
}

void WriteReport(const std::string& html_path, const ordered_json& report) {
  CheckReportPath(html_path);
  WriteFileAtomically(ReportJsonPath(html_path), report.dump(2) + "\n");
  WriteFileAtomically(html_path, RenderReportHtml(report));
}

double PeakRssMib() {
  struct rusage usage {};
  ::getrusage(RUSAGE_SELF, &usage);
  return static_cast<double>(usage.ru_maxrss) / 1024.0;  // Linux reports KiB
}

}  // namespace kvfold
