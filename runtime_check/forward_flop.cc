#include "runtime_check/forward_flop.h"

#include <atomic>

namespace kvfold {
namespace {

std::atomic<std::uint64_t> g_forward_flop{0};

}  // namespace

void CountForwardFlop(std::uint64_t flop) {
  g_forward_flop.fetch_add(flop, std::memory_order_relaxed);
}

std::uint64_t ForwardFlop() { return g_forward_flop.load(std::memory_order_relaxed); }

std::uint64_t CausalPairs(std::int64_t tokens, std::int64_t window) {
  if (tokens <= 0) return 0;
  const auto t = static_cast<std::uint64_t>(tokens);
  if (window <= 0 || window >= tokens) return t * (t + 1) / 2;
  const auto w = static_cast<std::uint64_t>(window);
  return w * (w + 1) / 2 + (t - w) * w;  // the first w queries see 1..w keys, the rest w each
}

}  // namespace kvfold
