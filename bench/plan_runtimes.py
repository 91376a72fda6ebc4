#!/usr/bin/env python3
"""Plans per runtime (kvfold plan --runtime kvfold|llama.cpp|vllm) on every shared model at KV
budgets 50/25/12.5/6.25% of the 16-bit cache. For each plan: its KL to the source on held-out
text (kvfold eval --compare --kv-cache), next to the best single method that runtime serves
(heads alone or the cache alone, the best screened within the budget) and, for llama.cpp, the
best uniform-heads + single cache type combination; for llama.cpp the plan's and that
combination's KL measured by llama.cpp itself (tests/js/llama_cpp_kl.mjs: the source with an F32
cache, the plan's GGUF with its -ctk/-ctv and flash attention on, kvfold's ids).

    python3 bench/plan_runtimes.py [--models a,b] [--windows 16] [--build build]
"""
import argparse, json, os, shutil, subprocess, sys, tempfile

BUDGETS = [0.5, 0.25, 0.125, 0.0625]


def run(args, **kw):
    return subprocess.run(args, check=True, capture_output=True, text=True, **kw).stdout


def texts(shared, model):
    if model.startswith("stories"):
        return f"{shared}/text/tinystories/calib.txt", f"{shared}/text/tinystories/eval.txt"
    return f"{shared}/text/wikitext-2/valid.tokens.txt", f"{shared}/text/wikitext-2/test.raw.txt"


class Bench:
    def __init__(self, a, work):
        self.a, self.work, self.kvfold = a, work, f"{a.build}/bin/kvfold"
        self.converted = {}

    def convert(self, model_dir, calib, passes):
        """The hf conversion of `passes` (the source itself when empty), cached."""
        if not passes:
            return model_dir
        if passes not in self.converted:
            out = f"{self.work}/c{len(self.converted)}"
            run([self.kvfold, "convert", model_dir, "--calib", calib, "--calib-tokens", "16384",
                 "--passes", passes, "-o", out, "--quiet"])
            self.converted[passes] = out
        return self.converted[passes]

    def kl(self, model_dir, source, text, cache):
        args = [self.kvfold, "eval", model_dir, "--text", text, "--max-windows",
                str(self.a.windows), "--compare", source, "--json", "--quiet"]
        if cache:
            args += ["--kv-cache", cache]
        return json.loads(run(args))["compare"]["kl"]

    def llama_kl(self, model_dir, source_gguf, ids, cache_k, cache_v):
        gguf = f"{self.work}/m.gguf"
        run([self.kvfold, "export", model_dir, "-o", gguf, "--dtype", "f32", "--force", "--quiet"])
        out = run(["node", "tests/js/llama_cpp_kl.mjs", source_gguf, gguf, ids, "--cache-k",
                   cache_k, "--cache-v", cache_v, "--from", "128"])
        return json.loads(out)["kl"]


def best(candidates, budget, keep):
    fitting = [c for c in candidates if c["bytes_fraction"] <= budget * (1 + 1e-12)
               and c["screen_kl"] is not None and keep(c)]
    return min(fitting, key=lambda c: c["screen_kl"]) if fitting else None


def label(c):
    if c is None:
        return "(none fits)"
    return f"{c['passes'] or '(none)'} \\| {c['kv_cache'] or '(full)'}"


def single(runtime):
    def keep(c):
        if runtime == "llama.cpp":  # heads with llama.cpp's default f16 cache, or a cache alone
            return c["passes"] == "" or c["kv_cache"] == "ggml<k=f16,v=f16>"
        if runtime == "vllm":
            return c["passes"] in ("", "kv-scales") or c["kv_cache"] is None
        return "+" not in c["family"]
    return keep


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--models", default="stories260K,stories260K-mha,micro-mha,mini-mha,"
                   "mini-mha-bf16-sharded")
    p.add_argument("--windows", type=int, default=16)
    p.add_argument("--build", default="build")
    p.add_argument("--shared", default=os.environ.get("KVFOLD_SHARED", "../shared"))
    a = p.parse_args()
    print("| model | runtime | budget | plan: passes \\| cache | bytes | KL | llama.cpp KL | "
          "best single method | its KL | best uniform heads + one cache type | its KL | "
          "llama.cpp KL |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for model in a.models.split(","):
        source = f"{a.shared}/models/{model}"
        calib, text = texts(a.shared, model)
        work = tempfile.mkdtemp(prefix="kvfold-plan-runtimes.")
        try:
            b = Bench(a, work)
            source_gguf, ids = f"{work}/source.gguf", f"{work}/ids.json"
            run([b.kvfold, "export", source, "-o", source_gguf, "--dtype", "f32", "--quiet"])
            run([b.kvfold, "eval", source, "--text", text, "--max-windows", str(a.windows),
                 "--token-logp", ids, "--quiet"])
            for runtime in ("llama.cpp", "vllm", "kvfold"):
                plan = json.loads(run([b.kvfold, "plan", source, "--calib", calib, "--budget",
                                       ",".join(map(str, BUDGETS)), "--runtime", runtime,
                                       "--json", "--quiet"]))
                for entry in plan["plans"]:
                    row = [model, runtime, str(entry["budget"])]
                    if entry["passes"] is None:
                        print("| " + " | ".join(row + ["(none fits)"] + [""] * 8) + " |")
                        continue
                    k = entry
                    d = b.convert(source, calib, k["passes"])
                    row += [label(k), f"{k['bytes_fraction']:.4f}",
                            f"{b.kl(d, source, text, k['kv_cache']):.4f}"]
                    row.append(f"{b.llama_kl(d, source_gguf, ids, k['cache_k'], k['cache_v']):.4f}"
                               if runtime == "llama.cpp" else "")
                    s = best(plan["candidates"], entry["budget"], single(runtime))
                    row += [label(s), f"{b.kl(b.convert(source, calib, s['passes']), source, text, s['kv_cache']):.4f}"
                            if s else ""]
                    if runtime == "llama.cpp":
                        u = best(plan["candidates"], entry["budget"],
                                 lambda c: "auto" not in c["passes"])
                        cache_k = cache_v = ""
                        if u:
                            du = b.convert(source, calib, u["passes"])
                            spec = u["kv_cache"][len("ggml<k="):-1].split(",v=")
                            row += [label(u), f"{b.kl(du, source, text, u['kv_cache']):.4f}",
                                    f"{b.llama_kl(du, source_gguf, ids, spec[0], spec[1]):.4f}"]
                        else:
                            row += ["(none fits)", "", ""]
                    else:
                        row += ["", "", ""]
                    print("| " + " | ".join(row) + " |", flush=True)
        finally:
            shutil.rmtree(work)


if __name__ == "__main__":
    sys.exit(main())
