// llama.cpp measures a plan: KL(source || model) of next-token distributions, both run by
// llama.cpp on the same ids (a `kvfold eval --token-logp` file of the source): the source with an
// F32 cache and flash attention off (what kvfold's full cache computes), the model with the
// plan's cache types and flash attention on (as its serve command runs it).
//
//   node llama_cpp_kl.mjs SOURCE.gguf MODEL.gguf TOKEN_LOGP.json [--cache-k TYPE] [--cache-v TYPE]
//        [--from POSITION] [--threads N]
// Prints {"kl", "top1_agreement", "tokens", ...} over positions from --from (default: the
// file's scored_from) on.
import fs from "node:fs";
import { loadLlama, logSumExp, parseArgs, windowContext } from "./llama_cpp_common.mjs";

// log softmax of a logits map (every token of the vocabulary) in float64, indexed by token id.
function logSoftmax(logits) {
  const out = new Float64Array(logits.size);
  const lse = logSumExp(logits);
  for (const [t, v] of logits) {
    if (t >= out.length) throw new Error(`llama.cpp returned logits of part of the vocabulary`);
    out[t] = v - lse;
  }
  return out;
}

function argmax(x) {
  let best = 0;
  for (let i = 1; i < x.length; ++i) if (x[i] > x[best]) best = i;
  return best;
}

// Each window's log-softmaxes at positions from..end, run by llama.cpp with `options`.
async function Run(llama, path, ref, options, from) {
  const model = await llama.loadModel({ modelPath: path });
  const context = await windowContext(model, ref.window, options);
  const sequence = context.getSequence();
  const out = [];
  for (const win of ref.windows) {
    await sequence.clearHistory();
    const last = ref.scored_from + win.targets.length;  // the file scores every position
    const items = win.input.map((t, p) =>
      p >= from && p < last ? [t, { generateNext: { logits: true } }] : t);
    const result = await sequence.controlledEvaluate(items);
    const rows = [];
    for (let p = from; p < last; ++p) rows.push(logSoftmax(result[p].next.logits));
    out.push(rows);
  }
  sequence.dispose();
  await context.dispose();
  await model.dispose();
  return out;
}

const str = (v) => v;
const a = parseArgs(process.argv.slice(2), { cacheK: "f16", cacheV: "f16", from: -1, threads: 1 },
  { "--cache-k": ["cacheK", str], "--cache-v": ["cacheV", str], "--from": ["from", Number],
    "--threads": ["threads", Number] },
  ["source", "model", "tokens"], "llama_cpp_kl.mjs SOURCE.gguf MODEL.gguf TOKEN_LOGP.json [options]");
const ref = JSON.parse(fs.readFileSync(a.tokens, "utf8"));
const from = a.from >= 0 ? a.from : ref.scored_from;
const llama = await loadLlama();
const source = await Run(llama, a.source, ref, { threads: a.threads, flashAttention: false,
  experimentalKvCacheKeyType: "F32", experimentalKvCacheValueType: "F32" }, from);
const model = await Run(llama, a.model, ref, { threads: a.threads, flashAttention: true,
  experimentalKvCacheKeyType: a.cacheK.toUpperCase(),
  experimentalKvCacheValueType: a.cacheV.toUpperCase() }, from);
let kl = 0, agree = 0, count = 0;
for (let w = 0; w < source.length; ++w) {
  for (let i = 0; i < source[w].length; ++i) {
    const p = source[w][i], q = model[w][i];
    let k = 0;
    for (let t = 0; t < p.length; ++t) k += Math.exp(p[t]) * (p[t] - q[t]);
    kl += k;
    agree += argmax(p) === argmax(q) ? 1 : 0;
    ++count;
  }
}
console.log(JSON.stringify({
  source: a.source, model: a.model, windows: source.length, tokens: count, from,
  cache_k: a.cacheK, cache_v: a.cacheV, flash_attention: "on", kl: kl / count,
  top1_agreement: agree / count,
}));
