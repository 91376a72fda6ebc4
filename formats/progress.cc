#include "formats/progress.h"

#include <unistd.h>

#include <cstdio>

#include "formats/ranks.h"

namespace kvfold {

Progress::Progress(std::string label, std::int64_t total, std::string unit, bool enabled)
    : label_(std::move(label)),
      total_(total),
      unit_(std::move(unit)),
      enabled_(enabled && IsFirstRank()),  // one rank speaks for all
      tty_(::isatty(STDERR_FILENO) != 0),
      start_(std::chrono::steady_clock::now()),
      last_print_(start_) {}

namespace {

// 42s, 3m05s, 2h07m.
std::string Duration(double seconds) {
  const auto s = static_cast<long long>(seconds + 0.5);
  char text[32];
  if (s < 60) {
    std::snprintf(text, sizeof text, "%llds", s);
  } else if (s < 3600) {
    std::snprintf(text, sizeof text, "%lldm%02llds", s / 60, s % 60);
  } else {
    std::snprintf(text, sizeof text, "%lldh%02lldm", s / 3600, (s % 3600) / 60);
  }
  return text;
}

}  // namespace

std::string TimeLeftText(double elapsed, std::int64_t done, std::int64_t total) {
  if (done <= 0 || done >= total || !(elapsed >= 0)) return "";
  const double left = elapsed * static_cast<double>(total - done) / static_cast<double>(done);
  return "about " + Duration(left) + " left";
}

double Progress::ElapsedSeconds() const {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
}

void Progress::Update(std::int64_t done, const std::string& detail) {
  if (!enabled_) return;
  const auto now = std::chrono::steady_clock::now();
  const bool last = done >= total_;
  if (!last && now - last_print_ < std::chrono::seconds(1)) return;
  last_print_ = now;
  const double elapsed = ElapsedSeconds();  // on a terminal the line is redrawn, then cleared
                                            // past its end (a shorter line leaves no tail)
  const std::string left = TimeLeftText(elapsed, done, total_);
  std::fprintf(stderr, "%s[%s] %lld/%lld %s  %.1fs%s%s%s%s%s%s", tty_ ? "\r" : "", label_.c_str(),
               static_cast<long long>(done), static_cast<long long>(total_), unit_.c_str(), elapsed,
               left.empty() ? "" : ", ", left.c_str(), detail.empty() ? "" : "  ", detail.c_str(),
               tty_ ? "\033[K" : "", (last || !tty_) ? "\n" : "");
  std::fflush(stderr);
}

}  // namespace kvfold
