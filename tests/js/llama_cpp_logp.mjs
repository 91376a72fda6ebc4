// llama.cpp as the judge of kvfold's numbers: loads a GGUF file with llama.cpp (node-llama-cpp's
// prebuilt CPU build), feeds each window of a `kvfold eval --token-logp` file, and compares
// llama.cpp's log p of every scored target with kvfold's.
//
//   node llama_cpp_logp.mjs MODEL.gguf TOKEN_LOGP.json [--cache f32|f16|q8_0|...] [--flash on|off]
//        [--cache-k TYPE] [--cache-v TYPE] [--from POSITION] [--tolerance 1e-4] [--json OUT.json]
//        [--threads N] [--stride S]
// --stride S scores every S-th target only (llama.cpp hands each scored position's whole
// vocabulary to JavaScript as a Map: 20 s for 126 positions of a 152k vocabulary).
// Prints: windows, tokens, mean NLL of both, max |delta log p|; exit 1 when it exceeds the
// tolerance (the tolerance applies only with --cache f32 --flash off, else it only reports).
import fs from "node:fs";
import { loadLlama, logSumExp, parseArgs, windowContext } from "./llama_cpp_common.mjs";

const str = (v) => v;
const a = parseArgs(process.argv.slice(2),
  { cache: "f32", flash: "off", tolerance: 1e-4, json: "", from: 0, threads: 1, stride: 1 },
  { "--cache": ["cache", str], "--cache-k": ["cacheK", str], "--cache-v": ["cacheV", str],
    "--flash": ["flash", str], "--tolerance": ["tolerance", Number], "--json": ["json", str],
    "--from": ["from", Number], "--threads": ["threads", Number], "--stride": ["stride", Number] },
  ["model", "tokens"], "llama_cpp_logp.mjs MODEL.gguf TOKEN_LOGP.json [options]");
a.cacheK = (a.cacheK ?? a.cache).toUpperCase();
a.cacheV = (a.cacheV ?? a.cache).toUpperCase();

// log softmax of the full logits map, in float64, at `target`.
function logProb(logits, target) {
  const t = logits.get(target);
  if (t === undefined) throw new Error(`llama.cpp returned no logit for token ${target}`);
  return t - logSumExp(logits);
}

const ref = JSON.parse(fs.readFileSync(a.tokens, "utf8"));
const llama = await loadLlama();
const model = await llama.loadModel({ modelPath: a.model });
const context = await windowContext(model, ref.window, {
  threads: a.threads, flashAttention: a.flash === "on",
  experimentalKvCacheKeyType: a.cacheK, experimentalKvCacheValueType: a.cacheV,
});
let maxDiff = 0, nllKvfold = 0, nllLlama = 0, count = 0, worst = null;
const perWindow = [];
const sequence = context.getSequence();
for (const [w, win] of ref.windows.entries()) {
  await sequence.clearHistory();
  const from = ref.scored_from;
  const scored = (i) => i >= 0 && i < win.targets.length && from + i >= a.from && i % a.stride === 0;
  const items = win.input.map((t, p) => scored(p - from) ? [t, { generateNext: { logits: true } }] : t);
  const out = await sequence.controlledEvaluate(items);
  let windowNll = 0;
  for (let i = 0; i < win.targets.length; ++i) {
    if (!scored(i)) continue;  // --from: only positions from there on; --stride
    const lp = logProb(out[from + i].next.logits, win.targets[i]);
    const d = Math.abs(lp - win.logp[i]);
    if (d > maxDiff) { maxDiff = d; worst = { window: w, position: from + i }; }
    nllKvfold -= win.logp[i];
    nllLlama -= lp;
    windowNll -= lp;
    ++count;
  }
  perWindow.push(windowNll);
}
sequence.dispose();
const result = {
  model: a.model, windows: ref.windows.length, tokens: count, cache_k: a.cacheK, cache_v: a.cacheV,
  flash_attention: a.flash, mean_nll_kvfold: nllKvfold / count, mean_nll_llama_cpp: nllLlama / count,
  ppl_kvfold: Math.exp(nllKvfold / count), ppl_llama_cpp: Math.exp(nllLlama / count),
  max_abs_delta_logp: maxDiff, worst,
};
console.log(JSON.stringify(result));
if (a.json) fs.writeFileSync(a.json, JSON.stringify(result, null, 2) + "\n");
await context.dispose();
await model.dispose();
const judged = a.cacheK === "F32" && a.cacheV === "F32" && a.flash === "off";
process.exit(judged && !(maxDiff <= a.tolerance) ? 1 : 0);
