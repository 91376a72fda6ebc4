# Sourced by hostile_inputs.sh: GGUF files read (inspect) and written (export, convert --format
# gguf). A GGUF header is untrusted like a safetensors header; a GGUF output replaces only a file
# kvfold wrote, atomically.
expect_ok "a GGUF export" export model -o ours.gguf
head -c 30000 ours.gguf >cut.gguf  # inside the header
expect_error "inspect of a truncated GGUF file" 1 "cut.gguf: truncated GGUF header" inspect cut.gguf
python3 - <<'PY'
import struct
key = b"tokenizer.ggml.tokens"
with open("huge.gguf", "wb") as f:  # one array claiming 2^60 strings in 60 bytes
    f.write(b"GGUF" + struct.pack("<IQQ", 3, 0, 1) + struct.pack("<Q", len(key)) + key +
            struct.pack("<IIQ", 9, 8, 1 << 60) + b"\0" * 16)
PY
expect_error "inspect of a GGUF array of 2^60 strings" 1 "cannot fit" inspect huge.gguf
echo "my notes" >notes.gguf
expect_error "export over a user's file" 1 "exists (--force replaces a GGUF file kvfold wrote)" \
  export model -o notes.gguf
expect_error "export --force over a user's file" 1 "is not a GGUF file kvfold wrote" \
  export model -o notes.gguf --force
expect_error "export --force over a GGUF kvfold did not write" 1 "is not a GGUF file kvfold wrote" \
  export model -o huge.gguf --force
expect_error "export into a missing folder" 1 "no-such-dir/x.gguf: cannot write" \
  export model -o no-such-dir/x.gguf
expect_error "convert --format gguf with kv-scales" 1 "kv-scales writes vLLM's FP8 cache scales" \
  "${convert[@]}" --passes kv-scales --format gguf -o x.gguf
case_name="user files beside GGUF outputs"
[ "$(cat notes.gguf)" = "my notes" ] && [ ! -e x.gguf ] && passed=$((passed + 1)) ||
  fail "a user's file changed or a refused output appeared"
# SIGTERM during export --force: the old file stays whole, no temporary is left.
case_name="SIGTERM during export --force"
for delay in 0.02 0.05 0.1; do
  "$kv" export model -o ours.gguf --force --quiet >/dev/null 2>&1 &
  pid=$!; sleep "$delay"; kill -TERM "$pid" 2>/dev/null; wait "$pid" 2>/dev/null
  "$kv" inspect ours.gguf >/dev/null 2>&1 || fail "ours.gguf unreadable after SIGTERM at ${delay}s"
done
check_world && passed=$((passed + 1))
rm -f ours.gguf cut.gguf huge.gguf notes.gguf
