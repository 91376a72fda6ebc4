// Token-exactness check: kvfold's native tokenizer.json reader against the two JavaScript
// implementations (@huggingface/tokenizers and @lenml/tokenizers, which must agree) on real
// tokenizer.json files (Llama 3.1, Qwen3, Llama 2 / Mistral), for every shared text and every
// hand-written hard case. Usage:
//   node compare_tokenizers.mjs KVFOLD_BIN SHARED_DIR
// Exits 0 when every id matches, 1 with the first difference per file otherwise.
import { execFileSync } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { Tokenizer } from "@huggingface/tokenizers";
import { TokenizerLoader } from "@lenml/tokenizers";

const here = path.dirname(fileURLToPath(import.meta.url));
const [kvfold, shared] = process.argv.slice(2);
const packages = ["tokenizer-llama3_1", "tokenizer-qwen3", "tokenizer-llama2"];
const sharedTexts = [
  "text/tinystories/calib.txt",
  "text/tinystories/eval.txt",
  "text/wikitext-2/valid.tokens.txt",
  "text/wikitext-2/test.raw.txt",
  "text/tinyshakespeare/train.txt",
].map((t) => path.join(shared, t));

// Each hard case in a file of its own: kvfold tokenizes whole files.
const caseDir = fs.mkdtempSync(path.join(os.tmpdir(), "kvfold-tokenizer-cases-"));
const cases = JSON.parse(fs.readFileSync(path.join(here, "hard_cases.json"), "utf8"));
const caseFiles = cases.map((text, i) => {
  const file = path.join(caseDir, `case${String(i).padStart(2, "0")}.txt`);
  fs.writeFileSync(file, text);
  return file;
});
const files = [...sharedTexts, ...caseFiles];

function firstDifference(a, b) {
  let i = 0;
  while (i < a.length && i < b.length && a[i] === b[i]) ++i;
  return i === a.length && i === b.length ? -1 : i;
}

let failures = 0;
for (const pkg of packages) {
  const dir = path.join(here, "node_modules", "@lenml", pkg, "models");
  const json = JSON.parse(fs.readFileSync(path.join(dir, "tokenizer.json"), "utf8"));
  const config = JSON.parse(fs.readFileSync(path.join(dir, "tokenizer_config.json"), "utf8"));
  const hf = new Tokenizer(json, config);
  const lenml = TokenizerLoader.fromPreTrained({ tokenizerJSON: json, tokenizerConfig: config });
  const args = ["tokenize", dir, "--json", ...files.flatMap((f) => ["--text", f])];
  const lines = execFileSync(kvfold, args, { encoding: "utf8", maxBuffer: 1 << 30 }).trim().split("\n");
  if (lines.length !== files.length) throw new Error(`${pkg}: kvfold printed ${lines.length} lines for ${files.length} files`);
  let tokens = 0;
  files.forEach((file, k) => {
    const text = fs.readFileSync(file, "utf8");
    const expected = hf.encode(text, { add_special_tokens: false }).ids;
    const second = lenml.encode(text, { add_special_tokens: false });
    const got = JSON.parse(lines[k]).ids;
    const name = k < sharedTexts.length ? path.relative(shared, file) : `hard case ${k - sharedTexts.length} ${JSON.stringify(cases[k - sharedTexts.length]).slice(0, 60)}`;
    const refs = firstDifference(expected, second);
    if (refs >= 0) {
      console.log(`${pkg}: ${name}: the two JavaScript tokenizers disagree at token ${refs}; not a kvfold check`);
    }
    const at = firstDifference(expected, got);
    if (at >= 0) {
      ++failures;
      console.log(`${pkg}: ${name}: MISMATCH at token ${at} of ${expected.length}: ` +
        `expected ${JSON.stringify(expected.slice(at, at + 8))}, kvfold ${JSON.stringify(got.slice(at, at + 8))}`);
    }
    tokens += expected.length;
  });
  console.log(`${pkg}: ${files.length} texts (${sharedTexts.length} shared, ${cases.length} hard cases), ${tokens} tokens compared`);
}
fs.rmSync(caseDir, { recursive: true });
if (failures > 0) {
  console.log(`${failures} text(s) differ`);
  process.exit(1);
}
console.log("token-exact on every text");
