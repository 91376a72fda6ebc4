// Pre-tokenized calibration ids from the bytes of a NumPy .npy or a JSON Lines file. No LibTorch
// and no tokenizer here, so the fuzzer (fuzz/fuzz_token_ids.cc) drives exactly the production
// code; calib/calibration_input.cc reads the file and encodes the documents.
// Every id must lie in [0, vocab_size) (and below 2^31, as ids are int32). Errors are one line,
// "<file>: <problem>", and name the line (JSON Lines) or the element (.npy, C order).
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <string_view>
#include <vector>

namespace kvfold {

// NumPy's .npy, format versions 1.0, 2.0 and 3.0: the magic, a header that is a Python dict
// literal with exactly the keys 'descr', 'fortran_order' and 'shape' (strings in single or double
// quotes without escapes, True/False, a tuple of non-negative decimal integers; a key given twice
// is refused, where NumPy would keep the last), then the array. The dtype is little-endian int16,
// uint16, int32, uint32 or int64; C order only. The shape's byte size is overflow-checked and
// must equal the data that follows the header exactly. Returns the ids in C order.
std::vector<std::int32_t> ParseNpyTokenIds(std::string_view bytes, std::int64_t vocab_size,
                                           const std::string& file);

// JSON Lines: one JSON value a line (blank lines skipped), one form per file: documents
// {"text": "..."} (other fields ignored) or ids {"input_ids": [...]}, {"ids": [...]} or [...]
// (input_ids first when a line has both; a key given twice keeps its last value, as nlohmann
// and Python do). A number that is not an id is reported as written in the file.
struct JsonLinesIds {
  bool documents = false;         // the file holds documents (each passed to on_document)
  std::vector<std::int32_t> ids;  // the file's ids in file order, when it holds ids
};
// on_document(where, text) is called for each document in file order; `where` is
// "<file>: line N", for errors about the document.
using DocumentFn = std::function<void(const std::string& where, const std::string& text)>;
JsonLinesIds ParseJsonLines(std::string_view bytes, std::int64_t vocab_size,
                            const std::string& file, const DocumentFn& on_document);

}  // namespace kvfold
