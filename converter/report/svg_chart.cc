#include "converter/report/svg_chart.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <sstream>

namespace kvfold {
namespace {

constexpr double kWidth = 360, kHeight = 230;
constexpr double kLeft = 52, kRight = 12, kTop = 40, kBottom = 42;  // legend band above kTop

std::string Num(double v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.1f", v);
  return buf;
}

std::string Tick(double v) {
  char buf[32];
  if (std::abs(v - std::round(v)) < 1e-9)
    std::snprintf(buf, sizeof buf, "%.0f", v);
  else
    std::snprintf(buf, sizeof buf, "%.2g", v);
  return buf;
}

struct Frame {
  const ChartAxes& a;
  double X(double x) const {
    return kLeft + (x - a.x_min) / (a.x_max - a.x_min) * (kWidth - kLeft - kRight);
  }
  double Y(double y) const {
    return kTop + (a.y_max - y) / (a.y_max - a.y_min) * (kHeight - kTop - kBottom);
  }
};

// Frame, grid, ticks, axis labels and title.
std::string Axes(const std::string& id, const ChartAxes& a, bool x_ticks) {
  Frame f{a};
  std::ostringstream o;
  o << "<svg class=\"chart\" data-chart=\"" << EscapeHtml(id) << "\" viewBox=\"0 0 " << kWidth
    << " " << kHeight << "\" width=\"" << kWidth << "\" height=\"" << kHeight
    << "\" role=\"img\" aria-label=\"" << EscapeHtml(a.title) << "\">";
  o << "<text x=\"" << kWidth / 2 << "\" y=\"16\" class=\"title\">" << EscapeHtml(a.title)
    << "</text>";
  for (int i = 0; i <= 4; ++i) {
    const double v = a.y_min + (a.y_max - a.y_min) * i / 4.0;
    o << "<line class=\"grid\" x1=\"" << kLeft << "\" x2=\"" << kWidth - kRight << "\" y1=\""
      << Num(f.Y(v)) << "\" y2=\"" << Num(f.Y(v)) << "\"/>";
    o << "<text class=\"ytick\" x=\"" << kLeft - 4 << "\" y=\"" << Num(f.Y(v) + 3) << "\">"
      << Tick(v) << "</text>";
  }
  if (x_ticks) {
    for (int i = 0; i <= 4; ++i) {
      const double v = a.x_min + (a.x_max - a.x_min) * i / 4.0;
      o << "<text class=\"xtick\" x=\"" << Num(f.X(v)) << "\" y=\"" << kHeight - kBottom + 13
        << "\">" << Tick(v) << "</text>";
    }
  }
  o << "<line class=\"axis\" x1=\"" << kLeft << "\" x2=\"" << kLeft << "\" y1=\"" << kTop
    << "\" y2=\"" << kHeight - kBottom << "\"/>";
  o << "<line class=\"axis\" x1=\"" << kLeft << "\" x2=\"" << kWidth - kRight << "\" y1=\""
    << kHeight - kBottom << "\" y2=\"" << kHeight - kBottom << "\"/>";
  o << "<text class=\"xlabel\" x=\"" << (kLeft + kWidth - kRight) / 2 << "\" y=\"" << kHeight - 6
    << "\">" << EscapeHtml(a.x_label) << "</text>";
  o << "<text class=\"ylabel\" transform=\"translate(12," << (kTop + kHeight - kBottom) / 2
    << ") rotate(-90)\">" << EscapeHtml(a.y_label) << "</text>";
  return o.str();
}

std::string Legend(const std::vector<Series>& series) {
  std::ostringstream o;
  double x = kLeft + 6;
  for (const auto& s : series) {
    o << "<rect x=\"" << Num(x) << "\" y=\"" << kTop - 17 << "\" width=\"9\" height=\"9\" fill=\""
      << s.color << "\"/><text class=\"legend\" x=\"" << Num(x + 12) << "\" y=\"" << kTop - 9
      << "\">" << EscapeHtml(s.name) << "</text>";
    x += 18 + 6.2 * static_cast<double>(s.name.size());
  }
  return o.str();
}

}  // namespace

std::string EscapeHtml(const std::string& s) {
  std::string out;
  for (char c : s) {
    switch (c) {
      case '<':
        out += "&lt;";
        break;
      case '>':
        out += "&gt;";
        break;
      case '&':
        out += "&amp;";
        break;
      case '"':
        out += "&quot;";
        break;
      default:
        out += c;
    }
  }
  return out;
}

std::string LineChart(const std::string& id, const ChartAxes& a,
                      const std::vector<Series>& series) {
  Frame f{a};
  std::ostringstream o;
  o << Axes(id, a, true);
  for (double m : a.x_markers) {
    o << "<line class=\"marker\" x1=\"" << Num(f.X(m)) << "\" x2=\"" << Num(f.X(m)) << "\" y1=\""
      << kTop << "\" y2=\"" << kHeight - kBottom << "\"/>";
  }
  for (const auto& s : series) {
    if (s.markers) {
      for (const auto& [x, y] : s.points) {
        o << "<circle cx=\"" << Num(f.X(x)) << "\" cy=\"" << Num(f.Y(y)) << "\" r=\"2.4\" fill=\""
          << s.color << "\"><title>" << EscapeHtml(s.name) << "</title></circle>";
      }
      continue;
    }
    o << "<polyline fill=\"none\" stroke=\"" << s.color << "\" stroke-width=\"1.6\" points=\"";
    for (const auto& [x, y] : s.points) o << Num(f.X(x)) << "," << Num(f.Y(y)) << " ";
    o << "\"><title>" << EscapeHtml(s.name) << "</title></polyline>";
  }
  o << Legend(series) << "</svg>";
  return o.str();
}

std::string BarChart(const std::string& id, const ChartAxes& a,
                     const std::vector<std::string>& categories,
                     const std::vector<Series>& series) {
  ChartAxes axes = a;
  axes.x_min = 0;
  axes.x_max = static_cast<double>(categories.size());
  Frame f{axes};
  std::ostringstream o;
  o << Axes(id, axes, false);
  const double slot =
      (f.X(1) - f.X(0)) * 0.8 / static_cast<double>(std::max<std::size_t>(1, series.size()));
  for (std::size_t c = 0; c < categories.size(); ++c) {
    o << "<text class=\"xtick\" x=\"" << Num(f.X(c + 0.5)) << "\" y=\"" << kHeight - kBottom + 13
      << "\">" << EscapeHtml(categories[c]) << "</text>";
    for (std::size_t s = 0; s < series.size(); ++s) {
      const double v = series[s].points[c].second;
      const double x = f.X(c + 0.1) + slot * static_cast<double>(s);
      // Bars rise (or hang) from zero, so negative values read as negative.
      const double zero = f.Y(std::clamp(0.0, axes.y_min, axes.y_max));
      o << "<rect fill=\"" << series[s].color << "\" x=\"" << Num(x) << "\" y=\""
        << Num(std::min(f.Y(v), zero)) << "\" width=\"" << Num(slot * 0.9) << "\" height=\""
        << Num(std::abs(zero - f.Y(v))) << "\"><title>"
        << EscapeHtml(series[s].name + " " + categories[c]) << ": " << Tick(v) << "</title></rect>";
    }
  }
  o << Legend(series) << "</svg>";
  return o.str();
}

}  // namespace kvfold
