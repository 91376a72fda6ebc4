#include "converter/passes/model_draft.h"

#include <algorithm>
#include <cstdint>
#include <functional>
#include <numeric>

#include "formats/error.h"
#include "formats/mapped_file.h"
#include "formats/tensor_names.h"

namespace kvfold {

namespace {

// The layer a tensor belongs to, by its HF name (also for names kvfold adds, such as k_scale).
std::optional<int> LayerOf(const std::string& name) {
  if (const std::optional<TensorId> id = ParseHfTensorName(name)) return id->layer;
  const std::string prefix = "model.layers.";
  if (name.rfind(prefix, 0) != 0) return std::nullopt;
  const std::size_t end = name.find('.', prefix.size());
  if (end == std::string::npos || end == prefix.size() || end - prefix.size() > 6)
    return std::nullopt;
  const std::string digits = name.substr(prefix.size(), end - prefix.size());
  if (digits.find_first_not_of("0123456789") != std::string::npos) return std::nullopt;
  return std::stoi(digits);
}

}  // namespace

void ModelDraft::RequireUnwritten(const std::string& name) const {
  const std::optional<int> layer = LayerOf(name);
  if (layer && layers_written_.count(*layer)) {
    Fail(name, "internal error: changed after its layer was written to the output");
  }
}

ModelDraft::ModelDraft(const Checkpoint& source) : config(source.config), source_(source) {}

ModelDraft::~ModelDraft() = default;

bool ModelDraft::Has(const std::string& name) const {
  if (replaced_.count(name)) return true;
  if (std::find(removed_.begin(), removed_.end(), name) != removed_.end()) return false;
  return source_.tensors.Find(name) != nullptr;
}

std::vector<std::int64_t> ModelDraft::Shape(const std::string& name) const {
  auto it = replaced_.find(name);
  if (it != replaced_.end()) return it->second.shape;
  if (!Has(name)) Fail(source_.dir, "draft has no tensor '" + name + "'");
  return source_.tensors.Get(name).entry->shape;
}

std::vector<float> ModelDraft::ReadF32(const std::string& name) const {
  const auto it = replaced_.find(name);
  if (it != replaced_.end() && it->second.sealed.empty() && !it->second.written)
    return it->second.data;
  std::vector<std::int64_t> shape = Shape(name);
  std::vector<float> values(static_cast<std::size_t>(
      std::accumulate(shape.begin(), shape.end(), std::int64_t{1}, std::multiplies<>())));
  ReadF32(name, values.data());
  return values;
}

void ModelDraft::ReadF32(const std::string& name, float* out) const {
  auto it = replaced_.find(name);
  if (it != replaced_.end() && it->second.written) {
    Fail(name, "internal error: read after it was written to the output");
  }
  if (it != replaced_.end() && !it->second.sealed.empty()) {
    const DType dtype = OutputDType(name, it->second);
    ConvertToF32(dtype, it->second.sealed.data(), it->second.sealed.size() / DTypeSize(dtype), out);
    return;
  }
  if (it != replaced_.end()) {
    std::copy(it->second.data.begin(), it->second.data.end(), out);
    return;
  }
  if (!Has(name)) Fail(source_.dir, "draft has no tensor '" + name + "'");
  source_.tensors.ReadF32(name, out);
}

void ModelDraft::Replace(const std::string& name, std::vector<std::int64_t> shape,
                         std::vector<float> data) {
  std::int64_t n = 1;
  for (auto d : shape) n *= d;
  if (n != static_cast<std::int64_t>(data.size()))
    Fail(name, "replacement data does not match its shape");
  RequireUnwritten(name);
  removed_.erase(std::remove(removed_.begin(), removed_.end(), name), removed_.end());
  Replacement& r = replaced_[name] = Replacement();
  r.shape = std::move(shape);
  r.data = std::move(data);
  Touch(name);
}

std::uint64_t ModelDraft::Generation(const std::string& name) const {
  const auto it = generations_.find(name);
  return it == generations_.end() ? 0 : it->second;
}

void ModelDraft::Add(const TensorId& id, std::vector<std::int64_t> shape, std::vector<float> data,
                     DType dtype) {
  const std::string name = HfTensorName(id);
  Replace(name, std::move(shape), std::move(data));
  replaced_[name].dtype = dtype;
}

void ModelDraft::Remove(const std::string& name) {
  RequireUnwritten(name);
  replaced_.erase(name);
  Touch(name);
  if (source_.tensors.Find(name) != nullptr) removed_.push_back(name);
}

std::vector<std::string> ModelDraft::Names() const {
  std::vector<std::string> names;
  for (const auto& [name, ref] : source_.tensors.tensors()) {
    if (Has(name)) names.push_back(name);
  }
  for (const auto& [name, r] : replaced_) {
    if (source_.tensors.Find(name) == nullptr) names.push_back(name);
  }
  std::sort(names.begin(), names.end());
  return names;
}

DType ModelDraft::OutputDType(const std::string& name, const Replacement& r) const {
  if (const TensorRef* original = source_.tensors.Find(name)) return original->entry->dtype;
  // New tensors take the dtype of the source's attention weights unless they name their own.
  return r.dtype.value_or(source_.Tensor({TensorRole::kKProj, 0}).entry->dtype);
}

std::string ModelDraft::OutputBytes(const std::string& name, const Replacement& r) const {
  if (!r.sealed.empty()) return r.sealed;
  const DType dtype = OutputDType(name, r);
  if (auto bad = FindUnrepresentable(dtype, r.data.data(), r.data.size())) {
    Fail(name, "cannot be written as " + std::string(DTypeName(dtype)) + ": " + *bad);
  }
  std::string bytes(r.data.size() * DTypeSize(dtype), '\0');
  ConvertFromF32(dtype, r.data.data(), r.data.size(), bytes.data());
  return bytes;
}

void ModelDraft::SealLayer(int layer) {
  for (auto& [name, r] : replaced_) {
    if (LayerOf(name) != layer || !r.sealed.empty() || r.written) continue;
    r.sealed = OutputBytes(name, r);
    r.data = std::vector<float>();  // frees the float32 copy
    Touch(name);                    // reads now give the rounded values
  }
}

void ModelDraft::OpenOutput(std::unique_ptr<ModelExporter> exporter) {
  if (output_) Fail(source_.dir, "internal error: the draft's output is already open");
  output_ = std::move(exporter);
}

ModelDraft::Outgoing ModelDraft::Unchanged(const std::string& name) const {
  const TensorRef& ref = source_.tensors.Get(name);
  Outgoing out{ParseHfTensorName(name), {name, ref.entry->dtype, ref.entry->shape, {}}, {}};
  if (ref.row_order) {
    out.owned = OrderedBytes(ref);  // the exporter takes kvfold's channel order
  } else {
    out.tensor.bytes = ref.bytes();
    out.tensor.mapped = true;
  }
  return out;
}

void ModelDraft::Send(Outgoing& t) {
  if (!t.owned.empty()) t.tensor.bytes = t.owned;
  output_->Add(t.id, t.tensor);
}

void ModelDraft::WriteLayer(int layer) {
  if ((!output_ && !discard_output_) || layers_written_.count(layer)) return;
  SealLayer(layer);
  auto outgoing = std::make_shared<std::vector<Outgoing>>();
  for (const std::string& name : Names()) {
    if (LayerOf(name) != layer) continue;
    auto it = replaced_.find(name);
    if (it == replaced_.end()) {
      if (output_) outgoing->push_back(Unchanged(name));
      continue;
    }
    Replacement& r = it->second;
    if (output_) {
      outgoing->push_back({ParseHfTensorName(name),
                           {name, OutputDType(name, r), r.shape, {}},
                           std::move(r.sealed)});
    }
    std::string().swap(r.sealed);  // frees the bytes (assigning "" would keep the capacity)
    r.written = true;
  }
  layers_written_.insert(layer);
  if (!output_) return;
  writer_.Start([this, outgoing] {
    for (Outgoing& t : *outgoing) {
      Send(t);
      std::string().swap(t.owned);  // written: its bytes go now, not with the layer
    }
  });
}

void ModelDraft::WriteRemaining() {
  if (!output_) Fail(source_.dir, "internal error: the draft has no output open");
  for (int l = 0; l < config.num_hidden_layers; ++l) WriteLayer(l);
  FlushOutput();
  for (const std::string& name : Names()) {
    const std::optional<int> layer = LayerOf(name);
    if (layer && layers_written_.count(*layer)) continue;
    auto it = replaced_.find(name);
    if (it == replaced_.end()) {
      Outgoing t = Unchanged(name);
      Send(t);
    } else {
      const std::string bytes = OutputBytes(name, it->second);
      output_->Add(ParseHfTensorName(name),
                   {name, OutputDType(name, it->second), it->second.shape, bytes});
    }
  }
}

std::vector<std::string> ModelDraft::NotCopied() const {
  if (!output_) Fail(source_.dir, "internal error: the draft has no output open");
  return output_->NotCopied();
}

std::vector<std::string> ModelDraft::FinishOutput(const nlohmann::ordered_json* provenance) {
  if (!output_) Fail(source_.dir, "internal error: the draft has no output open");
  FlushOutput();
  return output_->Finish({source_, config, extra_files_, provenance});
}

std::vector<std::string> ModelDraft::WriteTo(const std::string& dir,
                                             std::vector<std::string>* not_copied) {
  if (!output_) OpenOutput(MakeExporter(dir, source_, {}));
  WriteRemaining();
  if (not_copied != nullptr) *not_copied = NotCopied();
  return FinishOutput(nullptr);
}

void ModelDraft::AddOutputFile(const std::string& name,
                               std::function<void(const std::string&)> write) {
  extra_files_[name] = std::move(write);
}

}  // namespace kvfold
