// The math of cross-layer KV sharing (../shared/docs/METHODS.md, "Cross-layer sharing"): a group
// of layers ("readers") attends to the K/V one of them (the "source") computes. The source's
// new W_K/W_V come either from averaging (the reference repos' initialisation) or from a
// reduced-rank regression of every reader's own K/V on the source's input, whose per-reader
// decoders fold into that reader's W_Q (keys: a complex scalar per rotary pair, so it commutes
// with RoPE) and W_O (values: a d x d block per KV head). Pure functions over float matrices.
#pragma once

#include <cstdint>
#include <vector>

#include "converter/passes/gqa_fold.h"

namespace kvfold {

// The reference initialisations. pythia-mlkv (convert_to_mlkv.py) folds each later layer into
// the source as a running pairwise average, in layer order; whyNLP/LCKV (convert_pretrained.py)
// takes the uniform mean over the sharing layers.
enum class MeanRule { kRunningPairwise, kUniform };

// The source's new K/V projections [KV d, in_cols], from the readers' (ascending layers;
// readers[source_index] is the source). Queries and W_O stay as they are.
struct SharedKv {
  std::vector<double> wk, wv;
};
SharedKv MeanSharedKv(const std::vector<const AttentionProjections*>& readers,
                      std::size_t source_index, MeanRule rule);

// Calibration sums over the same tokens, ĥ = [h; 1] (h = attention input after input_layernorm):
// [D + 1, D + 1] row-major each.
struct SharingMoments {
  std::vector<double> source;               // sum ĥ_s ĥ_s^T
  std::vector<std::vector<double>> cross;   // per reader r: sum ĥ_s ĥ_r^T
  std::vector<std::vector<double>> reader;  // per reader r: sum ĥ_r ĥ_r^T
};

// Per KV head, the fraction of the readers' (query-weighted) key energy and value energy the
// shared K/V predicts from the source's input (1 = every reader's own K/V is reproduced).
struct SharingRecord {
  std::vector<double> key_energy_kept, value_energy_kept;
  double ridge = 0;  // of the source moment's mean diagonal, the smallest under which it factored
};

// Reduced-rank least squares: fits the source's K/V so that every reader's own K/V is predicted
// as well as possible, and rewrites each reader's W_Q and W_O to read it. Keys are fitted per
// rotary pair as a complex rank-1 problem, weighted by the reader's query energy at that pair
// (the score error); values per KV head as a rank-d problem. A reader whose own K/V lies in the
// span is reproduced exactly (to the ridge). `readers` are modified in place (wq, wo).
SharedKv FitSharedKv(const std::vector<AttentionProjections*>& readers,
                     const SharingMoments& moments, SharingRecord& record);

}  // namespace kvfold
