// Moving one layer's attention projections between a ModelDraft and the fold math's
// AttentionProjections (double precision, biases as an extra column).
#pragma once

#include "converter/gqa_fold.h"
#include "converter/model_draft.h"

namespace kvfold {

AttentionProjections ReadAttention(const ModelDraft& model, int layer);
// Writes wq/wk/wv/wo (and q/k/v biases) of `p` back; shapes follow p's head counts.
void WriteAttention(ModelDraft& model, int layer, const AttentionProjections& p);

}  // namespace kvfold
