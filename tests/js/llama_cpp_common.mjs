// What the llama.cpp judges (llama_cpp_logp.mjs, llama_cpp_kl.mjs) share: argument parsing,
// llama.cpp loaded the one way that runs here, a context for one window, and log-softmax
// denominators in float64.
import { getLlama, LlamaLogLevel } from "node-llama-cpp";

// argv as `flags` says ({"--name": [key, parse]}), onto a copy of `defaults`; the other
// arguments are positional, exactly as many as `names`, stored under those keys.
export function parseArgs(argv, defaults, flags, names, usage) {
  const a = { ...defaults };
  const positional = [];
  for (let i = 0; i < argv.length; ++i) {
    const flag = flags[argv[i]];
    if (flag) a[flag[0]] = flag[1](argv[++i]);
    else positional.push(argv[i]);
  }
  if (positional.length !== names.length) throw new Error(`usage: ${usage}`);
  names.forEach((name, i) => { a[name] = positional[i]; });
  return a;
}

// node-llama-cpp's prebuilt CPU build, never built or downloaded here.
export function loadLlama() {
  return getLlama({ build: "never", gpu: false, logLevel: LlamaLogLevel.error });
}

// A context for windows of `window` tokens: one cell more, since a context of exactly W cells
// shifts the window's start out. `options` should set threads: node-llama-cpp's default is its
// maxThreads (4 on a 2-core machine), and llama.cpp's spinning workers then wait for
// descheduled ones at every operation (a 256-token window of stories260K took 3 s with the
// default and 0.1 s with 1 thread, tests running beside others under `ctest -j`).
export function windowContext(model, window, options) {
  return model.createContext({ contextSize: window + 1, batchSize: window + 1, sequences: 1, ...options });
}

// log sum exp of a logits map (every token of the vocabulary), in float64. node-llama-cpp's
// totalLogitWeight would spare the vocabulary-sized map, but it sums in float32: 5e-4 off on a
// 151k vocabulary.
export function logSumExp(logits) {
  let max = -Infinity;
  for (const v of logits.values()) if (v > max) max = v;
  let sum = 0;
  for (const v of logits.values()) sum += Math.exp(v - max);
  return max + Math.log(sum);
}
