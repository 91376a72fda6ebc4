// bench_make_qk_norm_variant: a trained Llama checkpoint rewritten as a Qwen3 one (per-head
// RMSNorm of queries and keys before RoPE), for measuring the approximate KV-head fold
// (gqa-svd qk-norm=approximate) on heads that were trained: no trained Qwen3 is reachable here,
// and random weights have no correlated heads to fold.
//
//   bench_make_qk_norm_variant SOURCE CALIB OUT [--calib-tokens N]
//
// Each layer's q_norm and k_norm weights are the source's root-mean-square query and key channel
// on CALIB (one value for every channel), so that an average token's scores keep their scale;
// the norm then removes each token's own query and key length, which the source used. Every
// other tensor, the tokenizer and the config (model_type qwen3) are the source's.
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "converter/job_support.h"
#include "converter/layer_loop.h"
#include "formats/atomic_file.h"
#include "formats/checkpoint.h"
#include "formats/dtype.h"
#include "formats/error.h"
#include "formats/mapped_file.h"
#include "formats/safetensors_writer.h"

namespace {

using kvfold::Checkpoint;

// Per layer: the RMS of a query channel and of a key channel over the calibration tokens.
std::vector<std::pair<double, double>> ChannelRms(const Checkpoint& ck, const std::string& calib,
                                                  std::int64_t tokens) {
  const kvfold::InputPart input{ck.dir, calib, tokens, 256};
  const kvfold::CalibrationInput data = kvfold::LoadCalibration(ck, input, 1);
  kvfold::ComputePart compute;
  const kvfold::KvStatistics stats =
      kvfold::Calibrate(ck, {data.windows, data.tokenizer->bos_id(), input.window},
                        kvfold::kStatKeyPreRope | kvfold::kStatQueryEnergy, compute);
  std::vector<std::pair<double, double>> out;
  for (const kvfold::LayerKvStatistics& l : stats.layers) {
    double q = 0, k = 0;
    for (double x : l.query_energy) q += x;
    const std::size_t dim = static_cast<std::size_t>(stats.dim());
    for (std::size_t c = 0; c < dim; ++c) k += l.key_pre_rope[c * dim + c];
    const auto n = static_cast<double>(stats.tokens);
    out.emplace_back(std::sqrt(q / (n * static_cast<double>(l.query_energy.size()))),
                     std::sqrt(k / (n * static_cast<double>(dim))));
  }
  return out;
}

void Write(const Checkpoint& ck, const std::vector<std::pair<double, double>>& rms,
           const std::string& out) {
  std::filesystem::create_directories(out);
  const std::int64_t d = ck.config.head_dim;
  std::vector<std::string> blobs;
  std::vector<std::pair<std::string, std::vector<std::int64_t>>> named;
  for (const std::string& name : ck.tensors.Names()) {
    const std::vector<float> v = ck.tensors.ReadF32(name);
    blobs.emplace_back(reinterpret_cast<const char*>(v.data()), v.size() * sizeof(float));
    named.emplace_back(name, ck.tensors.Get(name).entry->shape);
  }
  for (std::size_t l = 0; l < rms.size(); ++l) {
    const std::string p = "model.layers." + std::to_string(l) + ".self_attn.";
    for (const auto& [name, value] : {std::pair{p + "q_norm.weight", rms[l].first},
                                      std::pair{p + "k_norm.weight", rms[l].second}}) {
      const std::vector<float> w(static_cast<std::size_t>(d), static_cast<float>(value));
      blobs.emplace_back(reinterpret_cast<const char*>(w.data()), w.size() * sizeof(float));
      named.emplace_back(name, std::vector<std::int64_t>{d});
    }
  }
  std::vector<kvfold::TensorToWrite> list;
  for (std::size_t i = 0; i < named.size(); ++i)
    list.push_back({named[i].first, kvfold::DType::kF32, named[i].second, blobs[i]});
  kvfold::WriteSafetensors(out + "/model.safetensors", list, {{"format", "pt"}});
  nlohmann::ordered_json c =
      nlohmann::ordered_json::parse(kvfold::ReadFileToString(ck.dir + "/config.json"));
  c["architectures"] = {"Qwen3ForCausalLM"};
  c["model_type"] = "qwen3";
  c["head_dim"] = d;
  c["attention_bias"] = false;
  c["use_sliding_window"] = false;
  c["kvfold_note"] = "made by bench_make_qk_norm_variant from " + ck.dir;
  kvfold::WriteFileAtomically(out + "/config.json", c.dump(2) + "\n");
  for (const char* file : {"tokenizer.model", "tokenizer.json", "tokenizer_config.json"}) {
    const std::string from = ck.dir + "/" + file;
    if (std::filesystem::exists(from))
      std::filesystem::copy_file(from, out + "/" + file,
                                 std::filesystem::copy_options::overwrite_existing);
  }
}

}  // namespace

int main(int argc, char** argv) {
  try {
    if (argc < 4) throw kvfold::Error("usage: SOURCE CALIB OUT [--calib-tokens N]");
    std::int64_t tokens = 16384;
    if (argc >= 6 && !std::strcmp(argv[4], "--calib-tokens")) tokens = std::stoll(argv[5]);
    const Checkpoint ck = kvfold::OpenCheckpoint(argv[1]);
    if (ck.config.qk_norm) throw kvfold::Error(std::string(argv[1]) + " has q/k norms already");
    const auto rms = ChannelRms(ck, argv[2], tokens);
    for (std::size_t l = 0; l < rms.size(); ++l)
      std::printf("layer %zu: q_norm %.4f, k_norm %.4f\n", l, rms[l].first, rms[l].second);
    Write(ck, rms, argv[3]);
    std::printf("wrote %s\n", argv[3]);
    return 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench_make_qk_norm_variant: error: %s\n", e.what());
    return 1;
  }
}
