#!/usr/bin/env python3
"""For a reconstruct-mode kvfold output, how many of the 2 possible directions of each rotary
pair the cached key basis (k_cache_proj) spans, per layer and group, next to the key energy
kept that kvfold.json records. Standard library only.

    python3 bench/rope_pair_coverage.py OUT_DIR [COMMUTE_OUT_DIR]
"""
import array, json, struct, sys


def energy(out_dir):
    meta = json.load(open(out_dir + "/kvfold.json"))
    return [sum(l["key_energy_kept"]) / len(l["key_energy_kept"]) for l in meta["passes"][0]["layers"]]


def coverage(out_dir):
    with open(out_dir + "/model.safetensors", "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
        layers = sorted(int(k.split(".")[2]) for k in header if k.endswith("k_cache_proj.weight"))
        for layer in layers:
            e = header[f"model.layers.{layer}.self_attn.k_cache_proj.weight"]
            if e["dtype"] != "F32":
                sys.exit("only F32 outputs are supported")
            f.seek(8 + n + e["data_offsets"][0])
            a = array.array("f")
            a.frombytes(f.read(e["data_offsets"][1] - e["data_offsets"][0]))
            kv, d, td = e["shape"]
            half = d // 2
            groups = []
            for g in range(kv):
                w = [0.0] * half
                for r in range(d):
                    for c in range(td):
                        w[(c % d) % half] += a[(g * d + r) * td + c] ** 2
                groups.append(w)
            yield layer, groups


out = sys.argv[1]
print("mean key energy kept per layer (reconstruct):", [round(x, 3) for x in energy(out)])
if len(sys.argv) > 2:
    print("mean key energy kept per layer (commute):    ", [round(x, 3) for x in energy(sys.argv[2])])
print("directions kept per rotary pair j = 0 (highest frequency) .. d/2-1, per group:")
for layer, groups in coverage(out):
    print("  layer", layer, [[round(x, 2) for x in w] for w in groups])
