// libkvfold_spm_shim.so: exports sentencepiece through a C ABI (see spm_shim.h for why).
#include "calib/spm_shim/spm_shim.h"

#include <sentencepiece_processor.h>

#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

namespace {

void SetError(char* err, size_t err_len, const std::string& message) {
  if (err == nullptr || err_len == 0) return;
  std::strncpy(err, message.c_str(), err_len - 1);
  err[err_len - 1] = '\0';
}

}  // namespace

extern "C" {

int kvfold_spm_abi(void) { return KVFOLD_SPM_SHIM_ABI; }

void* kvfold_spm_open(const char* model_path, char* err, size_t err_len) {
  auto* sp = new sentencepiece::SentencePieceProcessor();
  const auto status = sp->Load(model_path);
  if (!status.ok()) {
    SetError(err, err_len, status.ToString());
    delete sp;
    return nullptr;
  }
  return sp;
}

void kvfold_spm_close(void* handle) {
  delete static_cast<sentencepiece::SentencePieceProcessor*>(handle);
}

int kvfold_spm_vocab_size(void* h) {
  return static_cast<sentencepiece::SentencePieceProcessor*>(h)->GetPieceSize();
}
int kvfold_spm_bos_id(void* h) {
  return static_cast<sentencepiece::SentencePieceProcessor*>(h)->bos_id();
}
int kvfold_spm_eos_id(void* h) {
  return static_cast<sentencepiece::SentencePieceProcessor*>(h)->eos_id();
}

int kvfold_spm_encode(void* h, const char* text, size_t len, int** ids, size_t* n, char* err,
                      size_t err_len) {
  std::vector<int> out;
  const auto status =
      static_cast<sentencepiece::SentencePieceProcessor*>(h)->Encode(std::string(text, len), &out);
  if (!status.ok()) {
    SetError(err, err_len, status.ToString());
    return 1;
  }
  *n = out.size();
  *ids = static_cast<int*>(std::malloc(sizeof(int) * (out.empty() ? 1 : out.size())));
  if (*ids == nullptr) {
    SetError(err, err_len, "out of memory");
    return 1;
  }
  if (!out.empty()) std::memcpy(*ids, out.data(), sizeof(int) * out.size());
  return 0;
}

int kvfold_spm_decode(void* h, const int* ids, size_t n, char** text, char* err, size_t err_len) {
  std::string out;
  const auto status = static_cast<sentencepiece::SentencePieceProcessor*>(h)->Decode(
      std::vector<int>(ids, ids + n), &out);
  if (!status.ok()) {
    SetError(err, err_len, status.ToString());
    return 1;
  }
  *text = static_cast<char*>(std::malloc(out.size() + 1));
  if (*text == nullptr) {
    SetError(err, err_len, "out of memory");
    return 1;
  }
  std::memcpy(*text, out.c_str(), out.size() + 1);
  return 0;
}

void kvfold_spm_free(void* p) { std::free(p); }

int kvfold_spm_piece(void* h, int id, const char** text, size_t* len, float* score, int* kind) {
  const auto* sp = static_cast<sentencepiece::SentencePieceProcessor*>(h);
  if (id < 0 || id >= sp->GetPieceSize()) return 1;
  const std::string& piece = sp->IdToPiece(id);
  *text = piece.data();
  *len = piece.size();
  *score = sp->GetScore(id);
  *kind = sp->IsUnknown(id)   ? 2
          : sp->IsControl(id) ? 3
          : sp->IsUnused(id)  ? 5
          : sp->IsByte(id)    ? 6
                              : 1;
  return 0;
}

}  // extern "C"
