#include "converter/convert.h"

#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <cstdio>
#include <cstdlib>

#include <nlohmann/json.hpp>

#include "calib/kv_statistics.h"
#include "calib/text.h"
#include "calib/tokenizer.h"
#include "calib/windows.h"
#include "converter/model_draft.h"
#include "converter/pass.h"
#include "formats/atomic_file.h"
#include "formats/error.h"
#include "formats/mapped_file.h"
#include "formats/progress.h"
#include "formats/sha256.h"
#include "formats/version.h"
#include "runtime_check/data_parallel.h"
#include "runtime_check/reference_model.h"

namespace kvfold {
namespace {

using Clock = std::chrono::steady_clock;

double Since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

bool Exists(const std::string& path) {
  struct stat st {};
  return ::stat(path.c_str(), &st) == 0;
}

void RemoveTree(const std::string& path) {
  const std::string cmd = "rm -rf '" + path + "'";
  if (std::system(cmd.c_str()) != 0) std::fprintf(stderr, "kvfold: warning: could not remove %s\n", path.c_str());
}

// SHA-256 over config.json and every weight file in name order: what the conversion read.
std::string SourceSha256(const Checkpoint& ck) {
  Sha256 h;
  MappedFile config(ck.dir + "/config.json");
  h.Update(config.bytes());
  for (const auto& f : ck.tensors.files()) {
    MappedFile weights(f->path());
    h.Update(weights.bytes());
  }
  return h.HexDigest();
}

// The calibration forward: the source model over the calibration windows, batches run
// data-parallel with one collector per slot, joined in slot order (deterministic for a given
// thread count).
KvStatistics Calibrate(const Checkpoint& ck, const std::vector<TokenWindow>& windows,
                       std::int32_t bos, unsigned needed, const ConvertOptions& o) {
  const auto model = ReferenceModel::Load(ck, {o.device, o.threads});
  const std::size_t per_batch = std::max<std::size_t>(1, 2048 / static_cast<std::size_t>(o.window));
  const std::size_t batches = (windows.size() + per_batch - 1) / per_batch;
  std::vector<KvStatisticsCollector> collectors;
  for (std::size_t s = 0; s < DataParallelSlots(*model); ++s) {
    collectors.emplace_back(needed, static_cast<int>(ck.config.num_hidden_layers),
                            ck.config.num_key_value_heads, ck.config.head_dim);
  }
  Progress progress("calibrate", static_cast<std::int64_t>(windows.size()), "windows", o.progress);
  RunDataParallel(
      *model, batches,
      [&](std::size_t b, std::size_t slot) {
        const std::size_t first = b * per_batch;
        const std::size_t count = std::min(per_batch, windows.size() - first);
        std::vector<std::int32_t> tokens;
        tokens.reserve(count * static_cast<std::size_t>(o.window));
        for (std::size_t w = first; w < first + count; ++w) AppendModelInput(windows[w], bos, tokens);
        model->Observe(tokens, static_cast<int>(count), collectors[slot]);
      },
      [&](std::size_t done) {
        progress.Update(static_cast<std::int64_t>(std::min(windows.size(), done * per_batch)));
      });
  KvStatistics stats = collectors.front().statistics();
  for (std::size_t s = 1; s < collectors.size(); ++s) stats.Merge(collectors[s].statistics());
  return stats;
}

}  // namespace

ConvertResult Convert(const ConvertOptions& o) {
  const auto t_start = Clock::now();
  ConvertResult result;

  // Everything that can be refused is refused before any work.
  std::vector<PassSpec> specs = ParsePipeline(o.passes);
  if (o.output.empty()) Fail("-o", "an output folder is required");
  if (Exists(o.output) && !o.force) Fail(o.output, "already exists (use --force to replace it)");
  if (o.calib_tokens < o.window) Fail("--calib-tokens", "must be at least one window");
  const Checkpoint ck = OpenCheckpoint(o.model);
  std::vector<std::unique_ptr<Pass>> passes;
  unsigned needed = 0;
  for (const auto& spec : specs) {
    for (const auto& info : PassRegistry()) {
      if (spec.name == info.name) passes.push_back(info.create(spec, ck.config));
    }
    needed |= passes.back()->NeededStatistics();
  }

  // Calibration text: always read and hashed (recorded), run through the model when needed.
  if (ck.tokenizer_path.empty()) Fail(o.model, "no tokenizer.model in the model folder");
  const std::string text = LoadText(o.calib_text);
  const auto tokenizer = Tokenizer::Load(ck.tokenizer_path);
  std::vector<std::int32_t> tokens = tokenizer->Encode(text);
  const int max_windows = static_cast<int>(o.calib_tokens / o.window);
  const std::vector<TokenWindow> windows = CutWindows(tokens, o.window, max_windows, o.calib_text);
  result.calibration_tokens = static_cast<std::int64_t>(windows.size()) * o.window;
  KvStatistics stats;
  if (needed != 0) {
    const auto t0 = Clock::now();
    stats = Calibrate(ck, windows, tokenizer->bos_id(), needed, o);
    result.timings.push_back({"calibration", Since(t0)});
  }

  ModelDraft draft(ck);
  nlohmann::ordered_json pass_records = nlohmann::ordered_json::array();
  std::vector<std::string> canonical;
  for (std::size_t i = 0; i < passes.size(); ++i) {
    const auto t0 = Clock::now();
    nlohmann::ordered_json record = {{"pass", specs[i].Text()}};
    PassContext ctx{draft, stats, record};
    passes[i]->Run(ctx);
    pass_records.push_back(record);
    canonical.push_back(specs[i].Text());
    result.timings.push_back({specs[i].Text(), Since(t0)});
  }

  // Output: a temporary sibling folder, renamed into place when complete.
  const auto t_write = Clock::now();
  const std::string tmp = o.output + ".tmp." + std::to_string(::getpid());
  if (::mkdir(tmp.c_str(), 0755) != 0) {
    Fail(o.output, std::string("cannot create the output folder: ") + std::strerror(errno));
  }
  try {
    std::string pipeline;
    for (const auto& c : canonical) pipeline += (pipeline.empty() ? "" : ",") + c;
    draft.WriteTo(tmp);
    nlohmann::ordered_json meta = {
        {"format_version", 1},
        {"kvfold_version", kVersion},
        {"pipeline", pipeline},
        {"vanilla_checkpoint", draft.config.key_projection_heads == 0},
        {"source", {{"path", o.model}, {"sha256", SourceSha256(ck)}}},
        {"calibration",
         {{"file", o.calib_text},
          {"sha256", Sha256Hex(text)},
          {"tokens", result.calibration_tokens},
          {"window", o.window}}},
        {"kv_cache_bytes_per_token",
         {{"before", ck.config.KvBytesPerToken(ck.StoredElementBytes())},
          {"after", draft.config.KvBytesPerToken(ck.StoredElementBytes())}}},
        {"passes", pass_records},
    };
    WriteFileAtomically(tmp + "/kvfold.json", meta.dump(2) + "\n");
    if (Exists(o.output)) {  // --force: swap the old folder out only now
      const std::string old = o.output + ".old." + std::to_string(::getpid());
      if (std::rename(o.output.c_str(), old.c_str()) != 0) Fail(o.output, "cannot replace the existing folder");
      if (std::rename(tmp.c_str(), o.output.c_str()) != 0) {
        std::rename(old.c_str(), o.output.c_str());  // put the previous folder back
        Fail(o.output, "cannot move the output into place");
      }
      RemoveTree(old);
    } else if (std::rename(tmp.c_str(), o.output.c_str()) != 0) {
      Fail(o.output, "cannot move the output into place");
    }
  } catch (...) {
    RemoveTree(tmp);
    throw;
  }
  result.timings.push_back({"write", Since(t_write)});
  result.total_seconds = Since(t_start);
  return result;
}

}  // namespace kvfold
