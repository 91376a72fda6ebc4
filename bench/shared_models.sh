# Sourced by the bench scripts: the shared models every sweep covers and the texts each is
# calibrated and evaluated on (../shared/README.md).
shared="${KVFOLD_SHARED:-../shared}"
shared_models=(stories260K stories260K-mha micro-mha mini-mha mini-mha-bf16-sharded)

# Sets $calib and $eval for model $1, and $other: the other family's evaluation text (text unlike
# its calibration text, issue 28).
model_texts() {
  case "$1" in
    stories*) calib="$shared/text/tinystories/calib.txt"; eval="$shared/text/tinystories/eval.txt"
      other="$shared/text/wikitext-2/test.raw.txt" ;;
    *) calib="$shared/text/wikitext-2/valid.tokens.txt"; eval="$shared/text/wikitext-2/test.raw.txt"
      other="$shared/text/tinystories/eval.txt" ;;
  esac
}
