/* C interface of libkvfold_spm_shim.so, a thin wrapper over sentencepiece. kvfold opens it with
 * dlopen(RTLD_LOCAL | RTLD_DEEPBIND): Debian's libsentencepiece carries its own protobuf-lite,
 * which crashes at start-up when linked into the same process as libtorch's libprotobuf. */
#ifndef KVFOLD_SPM_SHIM_H_
#define KVFOLD_SPM_SHIM_H_

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

#define KVFOLD_SPM_SHIM_ABI 2

int kvfold_spm_abi(void);
/* Returns a handle, or NULL with a message in err. */
void* kvfold_spm_open(const char* model_path, char* err, size_t err_len);
void kvfold_spm_close(void* handle);
int kvfold_spm_vocab_size(void* handle);
int kvfold_spm_bos_id(void* handle);
int kvfold_spm_eos_id(void* handle);
/* Encodes without BOS/EOS; *ids is malloc'd (free with kvfold_spm_free). Returns 0 on success. */
int kvfold_spm_encode(void* handle, const char* text, size_t len, int** ids, size_t* n, char* err,
                      size_t err_len);
/* Decodes ids to a malloc'd, NUL-terminated string (free with kvfold_spm_free). */
int kvfold_spm_decode(void* handle, const int* ids, size_t n, char** text, char* err,
                      size_t err_len);
void kvfold_spm_free(void* p);
/* Piece `id` (0 <= id < vocab size): its text (owned by the model, valid while it is open), score
 * and kind: 2 unknown, 3 control, 5 unused, 6 byte, 1 any other (GGUF's token types). Returns 0
 * on success. */
int kvfold_spm_piece(void* handle, int id, const char** text, size_t* len, float* score, int* kind);

#ifdef __cplusplus
}
#endif

#endif /* KVFOLD_SPM_SHIM_H_ */
