#include "formats/checkpoint.h"

#include <sys/stat.h>

#include "formats/companion_files.h"
#include "formats/error.h"
#include "formats/mapped_file.h"
#include "formats/stored_layout.h"

namespace kvfold {
namespace {

std::string ShapeString(const std::vector<std::int64_t>& shape) {
  std::string s = "[";
  for (std::size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + "]";
}

}  // namespace

std::string FindTokenizerFile(const std::string& dir) {
  for (const char* name : {"tokenizer.json", "tokenizer.model"}) {
    const std::string path = dir + "/" + name;
    struct stat st {};
    if (::lstat(path.c_str(), &st) != 0) continue;
    // A link to /etc/shadow or a FIFO named tokenizer.json is not this model's tokenizer.
    const std::string problem = OwnFileProblem(dir, name);
    if (problem == "a folder") Fail(path, "is a folder");
    if (!problem.empty())
      Fail(path, problem + " (the tokenizer must be a file of the model folder)");
    return path;
  }
  return "";
}

Checkpoint OpenCheckpoint(const std::string& dir) {
  struct stat st {};
  if (::stat(dir.c_str(), &st) != 0 || !S_ISDIR(st.st_mode)) {
    Fail(dir, "not a model folder (expected config.json and *.safetensors)");
  }
  Checkpoint ck{dir, LoadModelConfig(dir), TensorStore::OpenModelDir(dir), ""};
  MapStoredLayout(ck.config, ck.tensors);  // fused tensors as views, kvfold's channel order
  ck.tokenizer_path = FindTokenizerFile(dir);
  // Bound what the config asks for by what the weights hold before listing the tensors it
  // implies (a billion layers would take gigabytes of names): every layer has tensors of its
  // own. Small mismatches get the detailed list of missing tensors below.
  const auto stored = static_cast<std::int64_t>(ck.tensors.tensors().size());
  if (ck.config.num_hidden_layers > stored + 1024) {
    Fail(dir + "/config.json",
         "num_hidden_layers is " + std::to_string(ck.config.num_hidden_layers) +
             " but the weights hold only " + std::to_string(stored) + " tensors");
  }

  std::string problems;
  int count = 0;
  for (const TensorId& id : RequiredTensors(ck.config)) {
    const std::string name = HfTensorName(id);
    const TensorRef* ref = ck.tensors.Find(name);
    std::string problem;
    if (ref == nullptr) {
      problem = "missing " + name;
    } else if (ref->entry->shape != ExpectedShape(id, ck.config)) {
      problem = name + " has shape " + ShapeString(ref->entry->shape) + ", config implies " +
                ShapeString(ExpectedShape(id, ck.config));
    } else if (!IsFloatingCompute(ref->entry->dtype)) {
      problem = name + " has dtype " + DTypeName(ref->entry->dtype) + " (expected F32/F16/BF16)";
    }
    if (!problem.empty()) {
      if (count < 5) problems += (count ? "; " : "") + problem;
      ++count;
    }
  }
  if (count > 0) {
    if (count > 5) problems += "; and " + std::to_string(count - 5) + " more";
    Fail(dir, std::to_string(count) + " tensor problem(s): " + problems);
  }
  return ck;
}

std::int64_t Checkpoint::StoredElementBytes() const {
  return static_cast<std::int64_t>(
      DTypeSize(Tensor({TensorRole::kQProj, 0}).entry->dtype));  // every layer has q_proj
}

std::int64_t Checkpoint::ParameterCount() const {
  std::int64_t n = 0;
  for (const auto& [name, ref] : tensors.tensors()) n += ref.entry->NumElements();
  return n;
}

}  // namespace kvfold
