// What --calib reads, in the forms users have calibration data in:
//  - plain UTF-8 text: Encode of the whole file (kvfold-ppl-v1), of which the tokenizer reads
//    in pieces, on `threads` threads, only as much as the `min_ids` asked for need
//    (calib/seam_encode.h: the same ids);
//  - JSON Lines (*.jsonl): one JSON value per line, either documents {"text": "..."} (an
//    exported HF dataset), each encoded alone and their ids concatenated in file order (only
//    until `min_ids`, a batch on `threads` threads at a time; every line parsed), or
//    pre-tokenized ids {"input_ids": [...]}, {"ids": [...]} or a bare [...] (one form per file);
//  - NumPy (*.npy): int32 or int64 ids (also int16/uint16/uint32), any shape, read in C order.
// Pre-tokenized ids are used as they are, so a calibration set built in Python is reproduced
// exactly (with --window equal to its row length, each row is one window).
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace kvfold {

class Tokenizer;

struct CalibrationTokens {
  std::vector<std::int32_t> tokens;
  std::string sha256;  // of the file's bytes
  std::string format;  // "text", "jsonl-text", "jsonl-ids" or "npy"
};

// Reads `path` by its extension (the .npy and JSON Lines bytes are parsed by formats/token_ids.h);
// throws Error naming the file (and line or element) for bad input, and for ids outside
// [0, vocab_size), the tokenizer's included.
// `min_ids`: the tokens the caller uses (0: all); `tokens` may hold more, never other ones.
// `threads`: how many a tokenizer that encodes in pieces may use (Tokenizer::EncodePrefix).
CalibrationTokens LoadCalibrationTokens(const std::string& path, const Tokenizer& tokenizer,
                                        std::int64_t vocab_size, std::size_t min_ids = 0,
                                        int threads = 1);

// The ids of the UTF-8 text file `path` (an evaluation text); an id outside [0, vocab_size) (a
// tokenizer larger than the model) is an Error naming the file and the tokenizer.
std::vector<std::int32_t> EncodeTextFile(const std::string& path, const Tokenizer& tokenizer,
                                         std::int64_t vocab_size, std::size_t min_ids = 0,
                                         int threads = 1);

}  // namespace kvfold
