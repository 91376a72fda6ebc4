# Calibration readers (--calib .npy and JSON Lines, formats/token_ids.h): a hostile header or id
# is one error line naming the file, never a read past the data, a hang or an internal error; ids
# beyond the model's vocabulary name the file they came from, a tokenizer's too.
# Sourced by hostile_inputs.sh near its end: uses its helpers, `model`, `broken` and `meanpool`.

# calib_npy FILE HEADER COUNT [VALUE]: a version 1.0 .npy file whose header is HEADER as written
# (padded as NumPy pads it), holding COUNT int32 elements equal to VALUE (default 1).
calib_npy() { python3 - "$@" <<'PY'
import struct, sys
path, header, count = sys.argv[1], sys.argv[2].encode(), int(sys.argv[3])
value = int(sys.argv[4]) if len(sys.argv) > 4 else 1
header += b" " * (-(10 + len(header) + 1) % 64) + b"\n"
data = struct.pack("<%di" % count, *[value] * count)
open(path, "wb").write(b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header + data)
PY
}
i4="{'descr': '<i4', 'fortran_order': False, "
calib_bad=(convert model --calib-tokens 512 "${meanpool[@]}" -o o1 --force --calib)  # --force: one accepted case hides no other

# .npy headers: sizes that wrap around, shapes that are not tuples of sizes, keys NumPy refuses.
calib_npy bad.npy "$i4'shape': (4611686018427387906,), }" 2
expect_error "npy shape whose bytes wrap around to the data's" 1 "bad.npy: .npy shape is too large" "${calib_bad[@]}" bad.npy
calib_npy bad.npy "$i4'shape': (4294967296, 4294967296), }" 2
expect_error "npy shape of 2^64 elements" 1 "bad.npy: .npy shape is too large" "${calib_bad[@]}" bad.npy
calib_npy bad.npy "$i4'shape': 4096 }" 2
expect_error "npy shape without parentheses" 1 "bad.npy: .npy header: 'shape' must be a tuple" "${calib_bad[@]}" bad.npy
calib_npy bad.npy "$i4'shape': (abc,), }" 2
expect_error "npy shape (abc,)" 1 "bad.npy: .npy header: 'shape' must be a tuple" "${calib_bad[@]}" bad.npy
calib_npy bad.npy "$i4'shape': (-1,-4096), }" 4096
expect_error "npy negative dimensions" 1 "bad.npy: .npy header: 'shape' has a negative dimension" "${calib_bad[@]}" bad.npy
calib_npy bad.npy "{'descr': '<i4', 'descr': '<f4', 'fortran_order': False, 'shape': (2,), }" 2
expect_error "npy descr given twice" 1 "bad.npy: .npy header: 'descr' is given twice" "${calib_bad[@]}" bad.npy
calib_npy bad.npy "$i4'shape': (2,), 'extra': 0}" 2
expect_error "npy unknown key" 1 "bad.npy: .npy header: unknown key 'extra'" "${calib_bad[@]}" bad.npy

# JSON Lines ids are reported as written.
printf '[1, 2]\n[18446744073709551615]\n' >bad.jsonl
expect_error "jsonl id 2^64-1" 1 "bad.jsonl: line 2: token id 18446744073709551615 is outside the model's vocabulary of 512" "${calib_bad[@]}" bad.jsonl
printf '{"ids": [1e3]}\n' >bad.jsonl
expect_error "jsonl id 1e3" 1 "bad.jsonl: line 1: token id 1e3 is not an integer" "${calib_bad[@]}" bad.jsonl

# Ids beyond the vocabulary: pre-tokenized, and from a tokenizer.json larger than the model (ids
# 600-602 against 512 embeddings) on calibration text (convert) and evaluation text (convert and
# report --eval).
printf '[1, 600]\n' >bad.jsonl
expect_error "jsonl id beyond the vocabulary" 1 "bad.jsonl: line 1: token id 600 is outside the model's vocabulary of 512" "${calib_bad[@]}" bad.jsonl
calib_npy bad.npy "$i4'shape': (2,), }" 2 600
expect_error "npy id beyond the vocabulary" 1 "bad.npy: element 0: token id 600 is outside the model's vocabulary of 512" "${calib_bad[@]}" bad.npy
broken; python3 - <<'PY'
import json
vocab = {"<unk>": 0, "<s>": 1, "</s>": 2, "a": 600, "b": 601, "ab": 602}
model = {"type": "BPE", "vocab": vocab, "merges": ["a b"], "unk_token": "<unk>"}
json.dump({"model": model}, open("bad/tokenizer.json", "w"))
PY
python3 -c 'print("ab" * 600)' >ab.txt
calib_npy ok.npy "$i4'shape': (2, 256), }" 512 5
too_large="ab.txt: the tokenizer bad/tokenizer.json gives token id 602, outside the model's vocabulary of 512"
expect_error "tokenizer ids beyond the vocabulary (convert --calib)" 1 "$too_large" \
  convert bad --calib ab.txt --calib-tokens 512 "${meanpool[@]}" -o o1 --force
expect_error "tokenizer ids beyond the vocabulary (convert --eval)" 1 "$too_large" \
  convert bad --calib ok.npy --calib-tokens 512 "${meanpool[@]}" -o o1 --force --report r.html --eval ab.txt --quiet
# report has no --quiet: its progress lines come before the one error line.
case_name="tokenizer ids beyond the vocabulary (report --eval)"
timeout 60 "$kv" report bad --calib ok.npy --calib-tokens 512 --eval ab.txt -o r.html >/dev/null 2>err.log </dev/null
rc=$?
if [ "$rc" -ne 1 ] || [ "$(grep -c '^kvfold: error: ' err.log)" -ne 1 ] ||
   ! tail -1 err.log | grep -qF "kvfold: error: $too_large"; then fail "exit $rc: $(tail -c 300 err.log)"
elif check_world; then passed=$((passed + 1)); fi
[ ! -e o1 ] && [ ! -e r.html ] || { case_name="tokenizer ids beyond the vocabulary"; fail "an output was left"; }
rm -rf bad o1 bad.npy bad.jsonl ok.npy ab.txt r.html r.json err.log
