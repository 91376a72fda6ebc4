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

double Progress::ElapsedSeconds() const {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
}

void Progress::Update(std::int64_t done, const std::string& detail) {
  if (!enabled_) return;
  const auto now = std::chrono::steady_clock::now();
  const bool last = done >= total_;
  if (!last && now - last_print_ < std::chrono::seconds(1)) return;
  last_print_ = now;
  std::fprintf(stderr, "%s[%s] %lld/%lld %s  %.1fs%s%s%s", tty_ ? "\r" : "", label_.c_str(),
               static_cast<long long>(done), static_cast<long long>(total_), unit_.c_str(),
               ElapsedSeconds(), detail.empty() ? "" : "  ", detail.c_str(),
               (last || !tty_) ? "\n" : "");
  std::fflush(stderr);
}

}  // namespace kvfold
