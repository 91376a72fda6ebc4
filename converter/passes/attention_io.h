// Moving one layer's attention projections between a ModelDraft and the fold math's
// AttentionProjections (double precision, biases as an extra column).
#pragma once

#include "converter/passes/gqa_fold.h"
#include "converter/passes/model_draft.h"

namespace kvfold {

// The KV heads layer `layer` of the draft has now (a pass may have rewritten it before the
// config changes in its Finish), and whether its keys are in reconstruct mode.
std::int64_t LayerKvHeads(const ModelDraft& model, int layer);
bool LayerReconstructsKeys(const ModelDraft& model, int layer);

AttentionProjections ReadAttention(const ModelDraft& model, int layer);
// The same into `p`, whose buffers keep their capacity: a pass that reads every layer reuses one
// AttentionProjections (a fresh 2048 x 2048 double matrix is a fresh mapping, cleared page by
// page by the kernel). `threads`: the projections are read on up to that many threads.
void ReadAttention(const ModelDraft& model, int layer, AttentionProjections& p, int threads = 1);
// Layer `layer`'s per-head query and key norm weights as they multiply (Gemma's 1 + w).
HeadNorms HeadNormsOf(const ModelDraft& model, int layer);
// Writes wq/wk/wv/wo (and q/k/v biases) of `p` back; shapes follow p's head counts.
void WriteAttention(ModelDraft& model, int layer, const AttentionProjections& p);

}  // namespace kvfold
