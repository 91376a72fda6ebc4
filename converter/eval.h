// `kvfold eval`: perplexity by kvfold-ppl-v1 of a model on a text; against another model
// (--compare) or under a cache policy (--kv-cache), the KL, top-1 agreement and delta NLL too.
// The library call behind the command; the command prints its JSON or text.
#pragma once

#include <nlohmann/json.hpp>
#include <string>

#include "converter/job.h"

namespace kvfold {

struct EvalJob {
  std::string model;       // HuggingFace folder
  std::string text;        // UTF-8 evaluation text
  std::string compare;     // --compare: the original model ("" = none)
  std::string kv_cache;    // --kv-cache: a cache policy spec ("" = the full cache)
  std::string token_logp;  // --token-logp: also write every scored target's log p here
  int window = 256;
  int max_windows = -1;     // -1: every complete window
  int batch = 0;            // windows per forward batch (0 = WindowsPerBatch, data_parallel.h)
  int vocab_block = 0;      // LM head rows per scoring block (0 = about 64 MiB of float32 rows)
  int copy = 0;             // --copy: sequences of the copy (retrieval) check
  int lckv_iterations = 0;  // LCKV models: the paper's parallel encoding with this many
  ComputePart compute;
};

// The result as `kvfold eval --json` prints it: model, text, windows, ppl, mean_nll, accuracy,
// tokens_predicted, tokens_per_second, device; "kv_cache", "compare", "copy", "kv_layers" and
// "lckv_parallel" sections where they apply. Throws Error naming the input for bad input.
nlohmann::ordered_json RunEval(const EvalJob& job);

}  // namespace kvfold
