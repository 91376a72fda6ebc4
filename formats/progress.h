// Progress: rate-limited progress lines on stderr for long work ("eval 12/64 windows ...").
// Lives in the base library so every stage (calibration, passes, evaluation) reports the same way.
#pragma once

#include <chrono>
#include <cstdint>
#include <string>

namespace kvfold {

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
