#include "calib/sentencepiece_tokenizer.h"

#include <dlfcn.h>

#include <cstdlib>
#include <mutex>
#include <vector>

#include "calib/seam_encode.h"
#include "calib/spm_shim/spm_shim.h"
#include "formats/error.h"
#include "formats/executable_dir.h"

namespace kvfold {
namespace {

// The shim's entry points, resolved once per process.
struct ShimApi {
  void* lib = nullptr;
  decltype(&kvfold_spm_abi) abi = nullptr;
  decltype(&kvfold_spm_open) open = nullptr;
  decltype(&kvfold_spm_close) close = nullptr;
  decltype(&kvfold_spm_vocab_size) vocab_size = nullptr;
  decltype(&kvfold_spm_bos_id) bos_id = nullptr;
  decltype(&kvfold_spm_eos_id) eos_id = nullptr;
  decltype(&kvfold_spm_encode) encode = nullptr;
  decltype(&kvfold_spm_decode) decode = nullptr;
  decltype(&kvfold_spm_free) free = nullptr;
  decltype(&kvfold_spm_piece) piece = nullptr;
};

constexpr const char* kShimFile = "libkvfold_spm_shim.so";
// AddressSanitizer refuses RTLD_DEEPBIND; its build (scripts/sanitize_readers.sh) has no
// LibTorch, so no second protobuf to keep apart.
#if defined(__SANITIZE_ADDRESS__)
constexpr int kDeepBind = 0;
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
constexpr int kDeepBind = 0;
#else
constexpr int kDeepBind = RTLD_DEEPBIND;
#endif
#else
constexpr int kDeepBind = RTLD_DEEPBIND;
#endif

template <typename Fn>
void Resolve(void* lib, const char* name, Fn* fn, const std::string& where) {
  *fn = reinterpret_cast<Fn>(::dlsym(lib, name));
  if (*fn == nullptr) Fail(where, std::string("missing symbol ") + name);
}

const ShimApi& Shim() {
  static ShimApi api;
  static std::once_flag once;
  static std::string load_error;
  std::call_once(once, [] {
    std::vector<std::string> candidates;
    if (const char* env = std::getenv("KVFOLD_SPM_SHIM")) candidates.push_back(env);
    candidates.push_back(ExecutableDir() + "/" + kShimFile);                // the build tree's bin/
    candidates.push_back(ExecutableDir() + "/../lib/kvfold/" + kShimFile);  // cmake --install
    std::string tried;
    for (const auto& path : candidates) {
      // DEEPBIND: the shim's sentencepiece must bind to its own protobuf, not libtorch's.
      api.lib = ::dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL | kDeepBind);
      if (api.lib != nullptr) {
        try {
          Resolve(api.lib, "kvfold_spm_abi", &api.abi, path);
          Resolve(api.lib, "kvfold_spm_open", &api.open, path);
          Resolve(api.lib, "kvfold_spm_close", &api.close, path);
          Resolve(api.lib, "kvfold_spm_vocab_size", &api.vocab_size, path);
          Resolve(api.lib, "kvfold_spm_bos_id", &api.bos_id, path);
          Resolve(api.lib, "kvfold_spm_eos_id", &api.eos_id, path);
          Resolve(api.lib, "kvfold_spm_encode", &api.encode, path);
          Resolve(api.lib, "kvfold_spm_decode", &api.decode, path);
          Resolve(api.lib, "kvfold_spm_free", &api.free, path);
          Resolve(api.lib, "kvfold_spm_piece", &api.piece, path);
          if (api.abi() != KVFOLD_SPM_SHIM_ABI) Fail(path, "shim ABI mismatch (rebuild kvfold)");
          return;
        } catch (const Error& e) {
          load_error = e.what();
          api = ShimApi{};
          return;
        }
      }
      tried += (tried.empty() ? "" : "; ") + std::string(::dlerror());
    }
    load_error = std::string("cannot load the sentencepiece shim ") + kShimFile + " (" + tried +
                 "); set KVFOLD_SPM_SHIM to its path";
  });
  if (api.lib == nullptr) throw Error(load_error);
  return api;
}

}  // namespace

std::unique_ptr<Tokenizer> SentencePieceTokenizer::Load(const std::string& model_path) {
  const ShimApi& api = Shim();
  char err[512] = {0};
  void* handle = api.open(model_path.c_str(), err, sizeof err);
  if (handle == nullptr) Fail(model_path, std::string("cannot load sentencepiece model: ") + err);
  return std::unique_ptr<Tokenizer>(new SentencePieceTokenizer(model_path, handle));
}

SentencePieceTokenizer::~SentencePieceTokenizer() {
  if (handle_ != nullptr) Shim().close(handle_);
}

std::vector<std::int32_t> SentencePieceTokenizer::Encode(std::string_view text) const {
  const ShimApi& api = Shim();
  int* ids = nullptr;
  std::size_t n = 0;
  char err[512] = {0};
  if (api.encode(handle_, text.data(), text.size(), &ids, &n, err, sizeof err) != 0) {
    Fail(path(), std::string("encoding failed: ") + err);
  }
  std::vector<std::int32_t> out(ids, ids + n);
  api.free(ids);
  return out;
}

std::set<std::pair<char, char>> SentencePieceTokenizer::CrossingSeams() const {
  const std::vector<Piece> pieces = Pieces();
  std::vector<std::string_view> texts;
  texts.reserve(pieces.size());
  for (const Piece& p : pieces) texts.push_back(p.text);
  return kvfold::CrossingSeams(texts);
}

std::vector<std::int32_t> SentencePieceTokenizer::EncodePrefix(std::string_view text,
                                                               std::size_t min_ids,
                                                               int threads) const {
  // sentencepiece's Encode is const and thread-safe; the shim adds no state.
  return EncodeInPieces(
      text, min_ids, threads, SeamOptions().context, [this] { return CrossingSeams(); },
      [this](std::string_view s) { return Encode(s); });
}

std::string SentencePieceTokenizer::Decode(const std::vector<std::int32_t>& ids) const {
  const ShimApi& api = Shim();
  char* text = nullptr;
  char err[512] = {0};
  static_assert(sizeof(int) == sizeof(std::int32_t), "int must be 32-bit");
  if (api.decode(handle_, reinterpret_cast<const int*>(ids.data()), ids.size(), &text, err,
                 sizeof err) != 0) {
    Fail(path(), std::string("decoding failed: ") + err);
  }
  std::string out(text);
  api.free(text);
  return out;
}

int SentencePieceTokenizer::vocab_size() const { return Shim().vocab_size(handle_); }
// sentencepiece says -1 for a model without BOS/EOS, which is kNoToken.
int SentencePieceTokenizer::bos_id() const { return Shim().bos_id(handle_); }
int SentencePieceTokenizer::eos_id() const { return Shim().eos_id(handle_); }

std::vector<SentencePieceTokenizer::Piece> SentencePieceTokenizer::Pieces() const {
  const ShimApi& api = Shim();
  std::vector<Piece> pieces(static_cast<std::size_t>(vocab_size()));
  for (int id = 0; id < vocab_size(); ++id) {
    const char* text = nullptr;
    std::size_t len = 0;
    Piece& p = pieces[static_cast<std::size_t>(id)];
    if (api.piece(handle_, id, &text, &len, &p.score, &p.kind) != 0)
      Fail(path(), "cannot read piece " + std::to_string(id));
    p.text.assign(text, len);
  }
  return pieces;
}

}  // namespace kvfold
