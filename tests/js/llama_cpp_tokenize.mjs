// llama.cpp's own tokenizer (from the GGUF file kvfold wrote) against `kvfold tokenize` on a text:
//   node llama_cpp_tokenize.mjs MODEL.gguf TEXT KVFOLD_IDS.json [--expect equal|report]
// Prints {tokens_kvfold, tokens_llama_cpp, equal, first_difference, ...}; with --expect equal
// (the default) exits 1 unless the ids are identical.
import fs from "node:fs";
import { getLlama, LlamaLogLevel } from "node-llama-cpp";

const args = process.argv.slice(2);
const expect = args.includes("--expect") ? args[args.indexOf("--expect") + 1] : "equal";
const [modelPath, textPath, idsPath] = args.filter((a, i) => !a.startsWith("--") &&
  args[i - 1] !== "--expect");
const text = fs.readFileSync(textPath, "utf8");
const kvfold = JSON.parse(fs.readFileSync(idsPath, "utf8")).ids;
const llama = await getLlama({ build: "never", gpu: false, logLevel: LlamaLogLevel.error });
const model = await llama.loadModel({ modelPath, vocabOnly: true });
const ours = Array.from(model.tokenize(text, true));
let first = -1;
const n = Math.min(ours.length, kvfold.length);
for (let i = 0; i < n; ++i) if (ours[i] !== kvfold[i]) { first = i; break; }
if (first < 0 && ours.length !== kvfold.length) first = n;
// Tokens outside a common prefix and suffix: the size of the difference, not only its start.
let suffix = 0;
while (suffix < n - Math.max(first, 0) && first >= 0 &&
       ours[ours.length - 1 - suffix] === kvfold[kvfold.length - 1 - suffix]) ++suffix;
const result = {
  text: textPath, tokens_kvfold: kvfold.length, tokens_llama_cpp: ours.length, equal: first < 0,
  first_difference: first < 0 ? null : {
    index: first, kvfold: kvfold.slice(first, first + 8), llama_cpp: ours.slice(first, first + 8),
    text_kvfold: model.detokenize(kvfold.slice(Math.max(0, first - 4), first + 8)),
  },
  common_prefix_tokens: first < 0 ? kvfold.length : first, common_suffix_tokens: suffix,
};
console.log(JSON.stringify(result));
await model.dispose();
process.exit(expect === "equal" && first >= 0 ? 1 : 0);
