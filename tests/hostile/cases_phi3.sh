# Sourced by hostile_inputs.sh: Phi-3's stored layout (fused qkv_proj and gate_up_proj, partial
# rotary, longrope) against configs that disagree with the weights.
"$(dirname "$kv")/bench_make_random_checkpoint" phi-4-mini phi --tiny 1 >/dev/null 2>&1
edit_config() {  # FOLDER PYTHON: a copy of phi with config.json changed by PYTHON (c is the dict)
  rm -rf "$1" && cp -r phi "$1"
  python3 -c "import json; p='$1/config.json'; c=json.load(open(p)); $2; json.dump(c, open(p, 'w'))"
}
expect_ok "a phi3 (Phi-4-mini attention) converts to GGUF" convert phi --calib "$calib" \
  --calib-tokens 512 --window 64 --passes 'gqa-svd<kv-heads=1>' --format gguf -o phi.gguf
edit_config phi-kv "c['num_key_value_heads'] = 1"
expect_error "phi3 fused qkv_proj rows the config does not imply" 1 \
  "qkv_proj.weight' has 128 rows; the config implies 96" inspect phi-kv
edit_config phi-rope "r = c['rope_scaling']; r['short_factor'] = r['short_factor'][:5]; r['long_factor'] = r['long_factor'][:5]"
expect_error "phi3 longrope factors of the wrong count" 1 \
  "rope_scaling.short_factor has 5 entries; the 12 rotary channels need 6" inspect phi-rope
edit_config phi-partial "c['partial_rotary_factor'] = 0.05"
expect_error "phi3 partial rotary leaving no channel to rotate" 1 \
  "partial_rotary_factor 0.05 with head_dim 16 gives 0 rotary channels" inspect phi-partial
rm -rf phi phi-kv phi-rope phi-partial phi.gguf
