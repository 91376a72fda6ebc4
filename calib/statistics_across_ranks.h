// Calibration sums joined across ranks (formats/ranks.h): each rank's statistics travel as bytes
// (the same numbers back, bit for bit) and rank 0 merges them in rank order with the types' own
// Merge, so N ranks add exactly what one process adds, grouped by rank.
#pragma once

#include <memory>
#include <string>

#include "calib/kv_statistics.h"
#include "calib/layer_heal.h"
#include "calib/output_refit_moments.h"

namespace kvfold {

std::string Pack(const LayerKvStatistics& s);
std::string Pack(const KvStatistics& s);  // counts, input moments and every layer
std::string Pack(const OutputRefitMoments& m);
std::string Pack(const HealWindows& w);
// Each throws Error ("internal") on bytes Pack did not write.
void Unpack(const std::string& bytes, LayerKvStatistics& s);
void Unpack(const std::string& bytes, KvStatistics& s);
void Unpack(const std::string& bytes, OutputRefitMoments& m);
// Heal's windows are unpacked within `budget` (spilled past it).
void Unpack(const std::string& bytes, HealWindows& w, const std::shared_ptr<MemoryBudget>& budget);

// Replaces this rank's sums with every rank's, merged in rank order; the same on every rank.
// Collective (every rank calls it at the same point); nothing happens with one rank.
void JoinAcrossRanks(LayerKvStatistics& s);
void JoinAcrossRanks(KvStatistics& s);
void JoinAcrossRanks(OutputRefitMoments& m);
// Every rank's captured windows, merged in window order (MergeHealWindows), on every rank,
// within `budget`. The packed bytes in flight hold every window in memory at once.
void JoinAcrossRanks(HealWindows& w, const std::shared_ptr<MemoryBudget>& budget);

}  // namespace kvfold
