// The floating-point operations of the model forwards this process ran: issue 27's measure of
// conversion throughput (FLOP of the forwards / wall time, against the sgemm rate), counted from
// the shapes each layer actually ran with rather than estimated from the pipeline.
//
// Counted: 2 per multiply-add of a layer's q/k/v projection, o_proj and MLP projections (as far
// as the layer ran: an observe-only run stops after q/k/v, or after attention when an observer
// wants the context), and of attention's two products over the (query, key) pairs a query
// attends to (causal, within a sliding window). Not counted: embeddings, the LM head, norms,
// RoPE, softmax, reconstruct-mode key products, heal's training, and the converter's own
// algebra (SVD, refit), which is what the throughput is compared against.
#pragma once

#include <cstdint>

namespace kvfold {

// Adds `flop` to the process-wide count (thread-safe).
void CountForwardFlop(std::uint64_t flop);
// The count since the process started.
std::uint64_t ForwardFlop();

// (query, key) pairs of one causal sequence of `tokens` tokens, each query attending to at most
// `window` keys (its own and the ones before it; window <= 0: all of them).
std::uint64_t CausalPairs(std::int64_t tokens, std::int64_t window);

}  // namespace kvfold
