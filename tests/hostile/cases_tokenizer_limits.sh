# Hostile tokenizer.json files, sourced by hostile_inputs.sh (its helpers, in its work folder):
# each must stop at a limit with one error line naming the file, within seconds, where it once
# ran for minutes, took gigabytes or overflowed the stack (docs/formats.md, "tokenizer.json").
# The folder `tk` is a copy of the model with a toy tokenizer.json, which kvfold prefers to the
# model's tokenizer.model; `kvfold tokenize` drives the tokenizer alone.

# tok_json PYTHON: writes tk/tokenizer.json, a toy BPE tokenizer `t` edited by the Python
# statements given (`raw`, when they set it, is written instead, for JSON Python cannot nest).
tok_json() {
  rm -rf tk && cp -r model tk && rm -f tk/tokenizer_config.json
  python3 - "$1" <<'EOF'
import json, sys
t = {"version": "1.0", "added_tokens": [], "normalizer": None, "pre_tokenizer": None,
     "post_processor": None, "decoder": None,
     "model": {"type": "BPE", "unk_token": "?", "merges": [],
               "vocab": {"?": 0, "a": 1, "b": 2, "e": 3, "\u00e9": 4}}}
raw = None
def split(regex):
    t["pre_tokenizer"] = {"type": "Split", "pattern": {"Regex": regex}, "behavior": "Isolated",
                          "invert": False}
def nested(key, inner, depth):  # `key` (a component) as Sequences nested `depth` deep
    kind = {"normalizer": "normalizers", "pre_tokenizer": "pretokenizers", "decoder": "decoders"}[key]
    body = ('{"type": "Sequence", "%s": [' % kind) * depth + inner + "]}" * depth
    return json.dumps(t).replace('"%s": null' % key, '"%s": %s' % (key, body))
exec(sys.argv[1])
open("tk/tokenizer.json", "w").write(raw if raw is not None else json.dumps(t))
EOF
}

# expect_quick_error NAME EXIT_CODE SUBSTRING ARGS...: expect_error, and within 20 seconds (each
# takes about a second alone; the limit leaves room for a loaded CI machine, and the unbounded
# cases took minutes or never ended).
expect_quick_error() {
  local name="$1" start=$SECONDS
  expect_error "$@"
  [ $((SECONDS - start)) -le 20 ] || { case_name="$name"; fail "took $((SECONDS - start)) s"; }
}

python3 -c 'open("a200k.txt", "w").write("a" * 200000)'
python3 -c 'open("e1k.txt", "w").write("e" * 1000 + "\u00e9")'
tk=tk/tokenizer.json

# 1. Regexes: a step budget for the whole text (128 steps per byte), PCRE2's depth and heap limits.
tok_json 'split(r"(?:\p{L}|\p{Ll}){0,16}\d")'
expect_quick_error "split regex backtracking at every position" 1 "$tk: regex (?:\p{L}|\p{Ll}){0,16}\d hit the match-step limit" \
  tokenize tk --text a200k.txt
expect_quick_error "split regex backtracking at every position (eval)" 1 "$tk: regex (?:\p{L}|\p{Ll}){0,16}\d hit the match-step limit" \
  eval tk --text a200k.txt
tok_json 'split(r"(?:\p{L}{30000}|x)")'
expect_quick_error "split regex scanning 30000 characters at every position" 1 "hit the match-step limit" tokenize tk --text a200k.txt
tok_json 'split(r"(a(?1)?)" + "()" * 1000)'
expect_quick_error "recursive split regex with 16 KB frames" 1 "$tk: regex (a(?1)?)()()" tokenize tk --text a200k.txt
expect_quick_error "recursive split regex with 16 KB frames (the limit)" 1 "hit PCRE2's heap limit (65536 KiB" tokenize tk --text a200k.txt
tok_json 'split(r"(a(?1)?)")'
expect_quick_error "recursive split regex 200000 deep" 1 "$tk: regex (a(?1)?) hit PCRE2's depth limit (100000" tokenize tk --text a200k.txt
tok_json 'split(r"(\p{L}+)\1")'
expect_quick_error "a back reference" 1 "$tk: regex (\p{L}+)\1 with a back reference is not supported" tokenize tk --text a200k.txt

# 2. Amplification: normalized (and pre-tokenized) text is at most 8 x its input + 256 bytes.
tok_json 't["normalizer"] = {"type": "Sequence", "normalizers": [{"type": "Replace", "pattern": {"Regex": ""}, "content": "ab"}] * 40}'
expect_quick_error "40 Replace steps of \"\" -> \"ab\"" 1 "$tk: Replace normalizer would make the text longer than" tokenize tk --text e1k.txt
tok_json 't["normalizer"] = {"type": "Sequence", "normalizers": [{"type": "Replace", "pattern": {"String": "e"}, "content": "ee"}] * 50}'
expect_quick_error "50 Replace steps of e -> ee" 1 "$tk: Replace normalizer would make the text longer than 8272 bytes" tokenize tk --text e1k.txt
tok_json 't["pre_tokenizer"] = {"type": "Sequence", "pretokenizers": [{"type": "ByteLevel", "use_regex": False}] * 40}'
expect_quick_error "40 ByteLevel steps" 1 "$tk: pre_tokenizer Sequence would make the text longer than" tokenize tk --text e1k.txt
tok_json 't["pre_tokenizer"] = {"type": "Metaspace", "replacement": "_" * 100000}'
expect_quick_error "a 100000-byte Metaspace replacement" 1 "$tk: Metaspace pre_tokenizer replacement must be one character" tokenize tk --text e1k.txt

# 3. Ids index a dense table: below twice the vocab and added tokens + 1024. Added tokens are at
# most 256 bytes long (matching walks one at every position).
tok_json 't["model"]["vocab"]["z"] = 2**30 - 1'
expect_quick_error "vocab id 2^30 - 1" 1 "$tk: token z has id 1073741823, but ids must stay below 1036" tokenize tk --text e1k.txt
tok_json 't["added_tokens"] = [{"id": 2**26, "content": "<x>", "special": True}]'
expect_quick_error "added token id 2^26" 1 "$tk: token <x> has id 67108864, but ids must stay below 1036" tokenize tk --text e1k.txt

tok_json 't["added_tokens"] = [{"id": 5, "content": "a" * 100000 + "b", "special": True}]'
expect_quick_error "a 100001-byte added token" 1 "$tk: added token aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa... is 100001 bytes long" tokenize tk --text a200k.txt

# 4. Nesting: no JSON file kvfold reads may nest deeper than 512 levels; a normalizer,
# pre_tokenizer or decoder holds at most 256 components.
tok_json 'raw = nested("normalizer", "{\"type\": \"NFC\"}", 100000)'
expect_quick_error "a normalizer Sequence 100000 deep" 1 "$tk: JSON nested deeper than 512 levels" tokenize tk --text e1k.txt
tok_json 'raw = nested("pre_tokenizer", "{\"type\": \"ByteLevel\"}", 100000)'
expect_quick_error "a pre_tokenizer Sequence 100000 deep" 1 "$tk: JSON nested deeper than 512 levels" tokenize tk --text e1k.txt
tok_json 'raw = nested("decoder", "{\"type\": \"Fuse\"}", 100000)'
expect_quick_error "a decoder Sequence 100000 deep" 1 "$tk: JSON nested deeper than 512 levels" tokenize tk --text e1k.txt
tok_json 'pass'
python3 -c 'open("tk/tokenizer_config.json", "w").write("{\"x\": " + "[" * 100000 + "]" * 100000 + "}")'
expect_quick_error "tokenizer_config.json 100000 deep" 1 "tk/tokenizer_config.json: JSON nested deeper than 512 levels" tokenize tk --text e1k.txt
tok_json 't["normalizer"] = {"type": "Sequence", "normalizers": [{"type": "NFC"}] * 10000}'
expect_quick_error "10000 NFC steps" 1 "$tk: normalizer with more than 256 components" tokenize tk --text a200k.txt
tok_json 't["normalizer"] = {"type": "Sequence", "normalizers": [None]}'
expect_quick_error "a null normalizer step" 1 "$tk: a normalizer Sequence step is null" tokenize tk --text e1k.txt

# 5. \C (one byte of a UTF-8 character) would leave invalid UTF-8 for the regexes after it.
tok_json 't["normalizer"] = {"type": "Replace", "pattern": {"Regex": r"\C"}, "content": "x"}'
expect_quick_error "\\C in a Replace regex" 1 "$tk: regex \\C does not compile at offset 2: using \\C is disabled" tokenize tk --text e1k.txt

rm -rf tk a200k.txt e1k.txt
