#include "converter/report/plan_section.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <sstream>

#include "converter/report/svg_chart.h"

namespace kvfold {
namespace {

using ordered_json = nlohmann::ordered_json;

std::string Text(const ordered_json& v, const char* none) {
  return v.is_null() || v.get<std::string>().empty() ? std::string(none) : v.get<std::string>();
}

std::string Number(const ordered_json& v, const char* format) {
  if (v.is_null()) return "&ndash;";
  char buf[32];
  std::snprintf(buf, sizeof buf, format, v.get<double>());
  return buf;
}

// log10 of a KL (floored: a lossless candidate has KL 0).
double LogKl(double kl) { return std::log10(std::max(kl, 1e-6)); }

// The screening frontier of one plan's candidates, as a line.
Series Frontier(const ordered_json& plan, const std::string& name, const char* color, double& low,
                double& high) {
  Series frontier{name, color, {}, false};
  for (const auto& c : plan["candidates"]) {
    if (c["screen_kl"].is_null() || !c["frontier"].get<bool>()) continue;
    const double y = LogKl(c["screen_kl"].get<double>());
    low = std::min(low, y);
    high = std::max(high, y);
    frontier.points.push_back({c["bytes_fraction"].get<double>(), y});
  }
  std::sort(frontier.points.begin(), frontier.points.end());
  return frontier;
}

// Every candidate of the plan as a dot, and its frontier; the frontier of each plan for another
// runtime as a line of its own.
std::string ParetoChart(const ordered_json& plan) {
  Series weights{"weights only", "#2c7be5", {}, true},
      cache{"cache policy only", "#e67e22", {}, true}, both{"both", "#8e44ad", {}, true};
  double low = 0, high = -6;
  for (const auto& c : plan["candidates"]) {
    if (c["screen_kl"].is_null()) continue;
    const double x = c["bytes_fraction"].get<double>(), y = LogKl(c["screen_kl"].get<double>());
    low = std::min(low, y);
    high = std::max(high, y);
    const bool has_passes = !c["passes"].get<std::string>().empty(),
               has_cache = !c["kv_cache"].is_null();
    (has_passes && has_cache ? both : has_cache ? cache : weights).points.push_back({x, y});
  }
  const std::string runtime = plan.value("runtime", "kvfold");
  std::vector<Series> series = {weights, cache, both,
                                Frontier(plan, "frontier (" + runtime + ")", "#2e7d32", low, high)};
  const char* colors[] = {"#c0392b", "#16a085"};
  std::size_t i = 0;
  for (const auto& other : plan.value("other_runtimes", ordered_json::array())) {
    series.push_back(Frontier(other, "frontier (" + other.value("runtime", "?") + ")",
                              colors[i++ % 2], low, high));
  }
  ChartAxes a;
  a.title = "KL vs KV bytes, every candidate (screening windows)";
  a.x_label = "KV bytes / source 16-bit cache";
  a.y_label = "log10 KL (nats/token)";
  a.x_min = 0;
  a.x_max = 1;
  a.y_min = std::floor(low);
  a.y_max = std::max(std::ceil(high), a.y_min + 1);
  return LineChart("plan-pareto", a, series);
}

// One row per budget: passes, cache, bytes, KL and, for a serving runtime, how to serve it.
std::string PlanTableHtml(const ordered_json& plan) {
  const bool serving = plan.value("runtime", "kvfold") != "kvfold";
  std::ostringstream o;
  o << "<table><tr><th>budget</th><th>passes</th><th>--kv-cache</th><th>KV "
       "bytes</th><th>KL</th>"
    << (serving ? "<th>serve</th>" : "") << "</tr>";
  for (const auto& p : plan["plans"]) {
    o << "<tr><td>" << Number(p["budget"], "%.4g") << "</td><td><code>"
      << EscapeHtml(p["passes"].is_null() ? "(nothing fits)" : Text(p["passes"], "(no conversion)"))
      << "</code></td><td><code>" << EscapeHtml(Text(p["kv_cache"], "(full cache)"))
      << "</code></td><td>" << Number(p["bytes_fraction"], "%.4f") << "</td><td>"
      << Number(p["kl"], "%.5f") << "</td>";
    if (serving)
      o << "<td><code>" << EscapeHtml(Text(p.value("serve", ordered_json()), "")) << "</code></td>";
    o << "</tr>";
  }
  o << "</table>";
  return o.str();
}

}  // namespace

std::string PlanSection(const ordered_json& plan) {
  std::ostringstream o;
  const auto& s = plan["scoring"];
  o << "<h2>KV budget plan</h2><p>Each candidate is scored by its KL against the source model's "
       "full cache on "
    << s["windows"].get<int>() << " calibration windows after the "
    << s["calibration_tokens"].get<std::int64_t>() << " calibration tokens (positions "
    << s["scored_from"].get<std::int64_t>() << "&ndash;" << s["window"].get<int>() - 1
    << "); every candidate on the first " << s["screen_windows"].get<int>()
    << " (the chart), the best per budget on all (the table).</p>";
  if (plan["time_limited"].get<bool>())
    o << "<p><b>The time limit stopped the search: some candidates were not scored.</b></p>";
  o << PlanTableHtml(plan);
  for (const auto& other : plan.value("other_runtimes", ordered_json::array())) {
    o << "<h3>Plans " << EscapeHtml(other["runtime"].get<std::string>()) << " serves</h3>"
      << PlanTableHtml(other);
  }
  o << "<div class=\"charts\">" << ParetoChart(plan) << "</div>";
  return o.str();
}

}  // namespace kvfold
