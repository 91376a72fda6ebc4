// Small self-contained SVG charts for the calibration report: axes, ticks, labels, legend.
// Every chart is an <svg class="chart" data-chart="ID"> so tests can count them.
#pragma once

#include <string>
#include <vector>

namespace kvfold {

struct Series {
  std::string name;
  std::string color;
  std::vector<std::pair<double, double>> points;  // (x, y)
  bool markers = false;  // LineChart: a dot per point instead of a line through them
};

struct ChartAxes {
  std::string title, x_label, y_label;
  double x_min = 0, x_max = 1, y_min = 0, y_max = 1;
  std::vector<double> x_markers;  // dashed vertical lines (e.g. directions gqa-svd keeps)
};

std::string LineChart(const std::string& id, const ChartAxes& axes,
                      const std::vector<Series>& series);
// Grouped bars: one group per category, one bar per series (series[i].points[c].second).
std::string BarChart(const std::string& id, const ChartAxes& axes,
                     const std::vector<std::string>& categories, const std::vector<Series>& series);
std::string EscapeHtml(const std::string& s);

}  // namespace kvfold
