// Progress: rate-limited progress lines on stderr for long work, with the time left estimated
// from the rate so far ("[convert] 3/22 layers  12.1s, about 1m17s left").
// Lives in the base library so every stage (calibration, passes, evaluation) reports the same way.
#pragma once

#include <chrono>
#include <cstdint>
#include <string>

namespace kvfold {

// "about 1m17s left" for `done` of `total` steps in `elapsed` seconds at the same rate; "" before
// the first step and after the last.
std::string TimeLeftText(double elapsed, std::int64_t done, std::int64_t total);

class Progress {
 public:
  // `label` prefixes every line; nothing is printed when `enabled` is false, nor on any rank but
  // the first (formats/ranks.h).
  Progress(std::string label, std::int64_t total, std::string unit, bool enabled);
  // Reports `done` of `total`; prints at most once a second, and always the final step.
  void Update(std::int64_t done, const std::string& detail = "");
  double ElapsedSeconds() const;

 private:
  std::string label_;
  std::int64_t total_;
  std::string unit_;
  bool enabled_;
  bool tty_;
  std::chrono::steady_clock::time_point start_;
  std::chrono::steady_clock::time_point last_print_;
};

}  // namespace kvfold
