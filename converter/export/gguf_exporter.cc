#include "converter/export/gguf_exporter.h"

#include <algorithm>
#include <cstdio>
#include <filesystem>

#include "calib/tokenizer.h"
#include "converter/export/gguf_model.h"
#include "converter/export/gguf_vocabulary.h"
#include "formats/dtype.h"
#include "formats/error.h"
#include "formats/gguf.h"
#include "formats/mapped_file.h"
#include "formats/stored_layout.h"
#include "formats/version.h"

namespace kvfold {
namespace {

constexpr std::size_t kChunkElements = std::size_t{4} << 20;  // 16 MiB of float32 at a time

GgmlType GgmlOf(DType d, const std::string& where) {
  switch (d) {
    case DType::kF32:
      return GgmlType::kF32;
    case DType::kF16:
      return GgmlType::kF16;
    case DType::kBF16:
      return GgmlType::kBF16;
    default:
      Fail(where, std::string("tensors of ") + DTypeName(d) + " cannot be written to GGUF");
  }
}

// "model" for "/x/model" and "/x/model/".
std::string FolderName(const std::string& dir) {
  std::filesystem::path p = std::filesystem::path(dir).lexically_normal();
  if (p.filename().empty()) p = p.parent_path();
  return p.filename().string();
}

DType DTypeOf(GgmlType t) {
  return t == GgmlType::kF16 ? DType::kF16 : t == GgmlType::kBF16 ? DType::kBF16 : DType::kF32;
}

GgmlType ParseGgufDType(const std::string& text, const Checkpoint& source) {
  if (text.empty()) return GgmlOf(source.Tensor({TensorRole::kQProj, 0}).entry->dtype, source.dir);
  if (text == "f32") return GgmlType::kF32;
  if (text == "f16") return GgmlType::kF16;
  if (text == "bf16") return GgmlType::kBF16;
  Fail("--dtype", "'" + text + "' is not f32, f16 or bf16");
}

// llama and deci store tensors alike (deci: per-layer KV heads): a pass may turn one into the
// other after the tensors are written.
bool IsLlamaLayout(const std::string& arch) { return arch == "llama" || arch == "deci"; }

class GgufExporter : public ModelExporter {
 public:
  GgufExporter(std::string path, const Checkpoint& source, const ExportOptions& options)
      : path_(std::move(path)),
        architecture_(GgufArchitecture(source.config, source.dir)),
        weight_type_(ParseGgufDType(options.dtype, source)),
        head_dim_(source.config.head_dim),
        progress_(options.progress) {
    if (source.tokenizer_path.empty())
      Fail(source.dir, "has no tokenizer.json or tokenizer.model to put into the GGUF file");
    const auto tokenizer = Tokenizer::Load(source.tokenizer_path);
    const GgufVocabulary vocabulary = ReadGgufVocabulary(*tokenizer, source.config.vocab_size);
    AddVocabularyMetadata(vocabulary, tokenizer_keys_);
    notes_ = vocabulary.notes;
    AddEmbeddingScaleNote(source);
    // Header space: the tokenizer, the source's tensors (GGUF takes nothing passes add) and
    // rope_freqs at the longest name, 16 KiB + 2 KiB a layer for the architecture keys and
    // kvfold.json (5 KiB for 6 layers of gqa-svd). A larger header moves the data once at the end.
    const std::uint64_t info = GgufWriter::TensorInfoBytes(std::string(kGgufMaxNameBytes, 'x'), 4);
    const std::uint64_t reserve =
        GgufWriter::MetadataBytes(tokenizer_keys_) + (source.tensors.tensors().size() + 1) * info +
        (16 << 10) + static_cast<std::uint64_t>(source.config.num_hidden_layers) * 2048;
    writer_ = std::make_unique<GgufWriter>(path_, reserve);
    for (const auto& [name, ref] : source.tensors.tensors()) {
      if (!ParseHfTensorName(name) && name.find("rotary_emb.inv_freq") == std::string::npos) {
        Fail(source.dir + "/" + name,
             "is a tensor llama.cpp's " + architecture_ + " does not read");
      }
    }
    const std::vector<float> factors = RopeFrequencyFactors(source.config);
    if (!factors.empty()) {
      if (!IsLlamaLayout(architecture_)) Fail(source.dir, "llama3 RoPE scaling outside llama");
      AddF32("rope_freqs.weight", factors);
    }
    if (source.config.rope_scaling.type == "longrope") {
      AddF32("rope_factors_long.weight", source.config.rope_scaling.long_factor);
      AddF32("rope_factors_short.weight", source.config.rope_scaling.short_factor);
    }
    // Phi-3's fused tensors, rotary channels in the checkpoint's order (llama.cpp's NEOX RoPE).
    if (source.config.fused_qkv) {
      stored_ = std::make_unique<StoredLayoutWriter>(source.config, [this](const TensorToWrite& t) {
        AddNamed(GgufStoredTensorName(t.name, t.name), t, false);
      });
    }
  }

  void Add(const std::optional<TensorId>& id, const TensorToWrite& t) override {
    if (!id) return;  // rotary_emb.inv_freq: llama.cpp computes its own (checked on open)
    if (stored_) return stored_->Add(id, t);
    AddNamed(GgufTensorName(*id, t.name, architecture_), t, PermutesRows(architecture_, id->role));
  }

  void AddNamed(const std::string& name, const TensorToWrite& t, bool permute) {
    const GgmlType type = t.shape.size() <= 1 ? GgmlType::kF32 : weight_type_;
    const bool norm = name.size() >= 11 && name.compare(name.size() - 11, 11, "norm.weight") == 0;
    const float shift = norm ? NormWeightShift(architecture_) : 0.0f;
    std::vector<std::uint64_t> dims(t.shape.rbegin(), t.shape.rend());
    writer_->AddTensor(name, type, dims);
    if (!permute && shift == 0 && t.dtype == DTypeOf(type)) {
      writer_->Write(t.bytes);
    } else {
      WriteConverted(t, type, permute, shift);
    }
    if (t.mapped) ReleaseMappedPages(t.bytes);
  }

  std::vector<std::string> Finish(const ExportedModel& m) override {
    if (stored_) stored_->Finish();
    const std::string arch = GgufArchitecture(m.config, m.source.dir);
    if (arch != architecture_ && !(IsLlamaLayout(arch) && IsLlamaLayout(architecture_)))
      Fail(m.source.dir, "internal error: the architecture changed");
    if (!m.extra_files.empty()) {
      Fail(path_, "the pipeline writes " + m.extra_files.begin()->first +
                      ", a kvfold table llama.cpp cannot use: write an hf output for kvfold's "
                      "runtime");
    }
    GgufMetadata meta;
    meta.Set("general.architecture", GgufValue::String(arch));
    meta.Set("general.type", GgufValue::String("model"));
    meta.Set("general.name", GgufValue::String(FolderName(m.source.dir)));
    meta.Set("general.file_type", GgufValue::U32(GgufFileType(weight_type_)));
    AddArchitectureMetadata(m.config, arch, meta);
    for (const auto& [key, value] : tokenizer_keys_.entries) meta.Set(key, value);
    meta.Set("kvfold.version", GgufValue::String(kVersion));
    if (m.provenance != nullptr) meta.Set("kvfold.json", GgufValue::String(m.provenance->dump()));
    writer_->Finish(meta);
    PrintNotes(m.config);
    return {std::filesystem::path(path_).filename().string()};
  }

  std::vector<std::string> NotCopied() const override { return {}; }

 private:
  template <typename T>
  void AddF32(const std::string& name, const std::vector<T>& values) {
    const std::vector<float> f(values.begin(), values.end());
    writer_->AddTensor(name, GgmlType::kF32, {f.size()});
    writer_->Write({reinterpret_cast<const char*>(f.data()), f.size() * 4});
  }

  // Gemma: llama.cpp scales embeddings by sqrtf(hidden_size); transformers (and kvfold's eval)
  // by that factor rounded to the embedding's dtype. Said when the two differ.
  void AddEmbeddingScaleNote(const Checkpoint& source) {
    const DType dtype = source.Tensor({TensorRole::kEmbedTokens}).entry->dtype;
    const float exact = EmbeddingScale(source.config, DType::kF32);
    const float rounded = EmbeddingScale(source.config, dtype);
    if (rounded == exact) return;
    char note[256];
    std::snprintf(note, sizeof note,
                  "llama.cpp scales embeddings by sqrt(hidden_size) = %.6g, transformers and "
                  "kvfold eval by its %s rounding %.6g: logits differ slightly",
                  exact, DTypeName(dtype), rounded);
    notes_.push_back(note);
  }

  // What llama.cpp will do differently, said once the file is written.
  void PrintNotes(const ModelConfig& config) const {
    if (!progress_) return;
    for (const auto& note : notes_) std::fprintf(stderr, "kvfold: note: %s\n", note.c_str());
    if (config.sliding_window > 0) {
      std::fprintf(stderr,
                   "kvfold: note: llama.cpp's %s attends to the whole context, not the sliding "
                   "window of %lld tokens: outputs agree up to that many tokens\n",
                   architecture_.c_str(), static_cast<long long>(config.sliding_window));
    }
  }

  // Rows in chunks of whole heads: converted to float32, shifted, permuted, converted to `type`.
  void WriteConverted(const TensorToWrite& t, GgmlType type, bool permute, float shift) {
    const std::int64_t rows = t.shape.empty() ? 1 : t.shape[0];
    const std::int64_t cols = rows == 0 ? 0 : NumElements(t) / rows;
    const std::int64_t block = permute ? head_dim_ : 1;
    if (permute && rows % head_dim_ != 0)
      Fail(t.name, "rows are not a whole number of heads of " + std::to_string(head_dim_));
    const std::int64_t step =
        std::max<std::int64_t>(block, static_cast<std::int64_t>(kChunkElements) /
                                          std::max<std::int64_t>(cols, 1) / block * block);
    const std::size_t in_size = DTypeSize(t.dtype), out_size = DTypeSize(DTypeOf(type));
    std::vector<float> in, out;
    std::string bytes;
    for (std::int64_t r0 = 0; r0 < rows; r0 += step) {
      const std::int64_t n = std::min(step, rows - r0);
      const std::size_t count = static_cast<std::size_t>(n * cols);
      in.resize(count);
      ConvertToF32(t.dtype, t.bytes.data() + static_cast<std::size_t>(r0 * cols) * in_size, count,
                   in.data());
      for (float& v : in) v += shift;
      const std::vector<float>* src = &in;
      if (permute) {
        out.resize(count);
        for (std::int64_t r = 0; r < n; ++r)
          std::copy_n(in.begin() + r * cols, cols, out.begin() + PermutedRow(r, head_dim_) * cols);
        src = &out;
      }
      if (auto bad = FindUnrepresentable(DTypeOf(type), src->data(), count))
        Fail(t.name, "cannot be written as " + std::string(DTypeName(DTypeOf(type))) + ": " + *bad);
      bytes.resize(count * out_size);
      ConvertFromF32(DTypeOf(type), src->data(), count, bytes.data());
      writer_->Write(bytes);
    }
  }

  static std::int64_t NumElements(const TensorToWrite& t) {
    std::int64_t n = 1;
    for (auto d : t.shape) n *= d;
    return n;
  }

  std::string path_;
  std::string architecture_;
  GgmlType weight_type_;
  std::int64_t head_dim_;
  bool progress_;
  GgufMetadata tokenizer_keys_;     // tokenizer.ggml.*, built once: sized the header, then written
  std::vector<std::string> notes_;  // what llama.cpp does differently with the tokenizer
  std::unique_ptr<GgufWriter> writer_;
  std::unique_ptr<StoredLayoutWriter> stored_;  // phi3: fused as the checkpoint stores them
};

}  // namespace

void CheckGgufOutputPath(const std::string& path, bool replace) {
  std::error_code ec;
  const auto status = std::filesystem::symlink_status(path, ec);
  if (ec || !std::filesystem::exists(status)) return;
  if (!replace) Fail(path, "exists (--force replaces a GGUF file kvfold wrote)");
  if (!std::filesystem::is_regular_file(status))
    Fail(path, "is not a regular file; kvfold replaces only a GGUF file it wrote");
  const MappedFile file(path);
  try {
    if (ParseGgufHeader(file.bytes(), path).metadata.String("kvfold.version")) return;
  } catch (const Error&) {
  }
  Fail(path, "is not a GGUF file kvfold wrote; kvfold replaces only its own outputs");
}

std::unique_ptr<ModelExporter> MakeGgufExporter(const std::string& path, const Checkpoint& source,
                                                const ExportOptions& options) {
  return std::make_unique<GgufExporter>(path, source, options);
}

}  // namespace kvfold
