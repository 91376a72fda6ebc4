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
import { getLlama, LlamaLogLevel } from "node-llama-cpp";

function parseArgs(argv) {
  const a = { cacheK: "f16", cacheV: "f16", from: -1, threads: 1 };
  const pos = [];
  for (let i = 0; i < argv.length; ++i) {
    const k = argv[i];
    if (k === "--cache-k") a.cacheK = argv[++i];
    else if (k === "--cache-v") a.cacheV = argv[++i];
    else if (k === "--from") a.from = Number(argv[++i]);
    else if (k === "--threads") a.threads = Number(argv[++i]);
    else pos.push(k);
  }
  if (pos.length !== 3) throw new Error("usage: llama_cpp_kl.mjs SOURCE.gguf MODEL.gguf TOKEN_LOGP.json [options]");
  [a.source, a.model, a.tokens] = pos;
  return a;
}

// log softmax of a logits map (every token of the vocabulary) in float64, indexed by token id.
function logSoftmax(logits) {
  const out = new Float64Array(logits.size);
  let max = -Infinity;
  for (const v of logits.values()) if (v > max) max = v;
  let sum = 0;
  for (const v of logits.values()) sum += Math.exp(v - max);
  const lse = max + Math.log(sum);
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

// LLAMA_THREADS_NOTE: llama.cpp's threads are set, 1 by default. node-llama-cpp's default is its
// maxThreads (4 on a 2-core machine); llama.cpp's spinning workers then wait for descheduled
// ones at every operation: a 256-token window of stories260K took 3 s with the default and 0.1 s
// with 1 thread (tests run beside others under `ctest -j`).
// Each window's log-softmaxes at positions from..end, run by llama.cpp with `options`.
async function Run(llama, path, ref, options, from) {
  const model = await llama.loadModel({ modelPath: path });
  const context = await model.createContext({
    contextSize: ref.window + 1, batchSize: ref.window + 1, sequences: 1, ...options,
  });
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

const a = parseArgs(process.argv.slice(2));
const ref = JSON.parse(fs.readFileSync(a.tokens, "utf8"));
const from = a.from >= 0 ? a.from : ref.scored_from;
const llama = await getLlama({ build: "never", gpu: false, logLevel: LlamaLogLevel.error });
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
