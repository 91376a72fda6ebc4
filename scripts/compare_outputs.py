#!/usr/bin/env python3
"""Compares two kvfold outputs tensor by tensor (CTest `mpi`): the same tensor names, shapes and
dtypes, and every tensor within REL of the first one's largest magnitude:
max|a - b| <= REL * max|a|. Relative to the tensor's scale, not element by element, because
entries near zero carry the absolute rounding of their neighbours. Also compares the numbers of two
`kvfold eval --json` or `kvfold plan --json` files (every number but seconds and rates) with the
same bound, relative to each number. Pure Python: no NumPy on a fresh machine.

  compare_outputs.py folders A B REL     compare_outputs.py eval A.json B.json REL
"""
import array
import glob
import json
import os
import struct
import sys

DECODE = {"F32": ("f", 4), "BF16": ("H", 2), "F16": ("e", 2)}


def tensors(folder):
    out = {}
    for path in sorted(glob.glob(os.path.join(folder, "*.safetensors"))):
        with open(path, "rb") as f:
            n = struct.unpack("<Q", f.read(8))[0]
            header = json.loads(f.read(n))
            data = f.read()
        for name, entry in header.items():
            if name == "__metadata__":
                continue
            begin, end = entry["data_offsets"]
            out[name] = (entry["dtype"], entry["shape"], data[begin:end])
    if not out:
        sys.exit(f"{folder}: no safetensors files")
    return out


def values(dtype, raw):
    if dtype not in DECODE:
        sys.exit(f"dtype {dtype} not handled")
    code, _ = DECODE[dtype]
    if code == "e":
        return [v[0] for v in struct.iter_unpack("<e", raw)]
    a = array.array(code)
    a.frombytes(raw)
    if code == "H":  # bfloat16: the high half of a float32
        wide = array.array("I", (x << 16 for x in a))
        return array.array("f", wide.tobytes())
    return a


def compare_folders(a_dir, b_dir, rel):
    a, b = tensors(a_dir), tensors(b_dir)
    if sorted(a) != sorted(b):
        sys.exit(f"tensor names differ: {sorted(set(a) ^ set(b))}")
    worst, identical = 0.0, True
    for name in sorted(a):
        (da, sa, ra), (db, sb, rb) = a[name], b[name]
        if (da, sa) != (db, sb):
            sys.exit(f"{name}: {da}{sa} vs {db}{sb}")
        if ra == rb:
            continue
        identical = False
        va, vb = values(da, ra), values(db, rb)
        scale = max(abs(x) for x in va) or 1.0
        diff = max(abs(x - y) for x, y in zip(va, vb)) / scale
        worst = max(worst, diff)
        if diff > rel:
            sys.exit(f"{name}: differs by {diff:.3g} of its largest magnitude (bound {rel:g})")
    print(f"{len(a)} tensors: " + ("byte-identical" if identical else f"largest difference {worst:.3g} of scale"))


def numbers(doc, prefix=""):
    if isinstance(doc, dict):
        for k, v in doc.items():
            yield from numbers(v, f"{prefix}.{k}")
    elif isinstance(doc, list):
        for i, v in enumerate(doc):
            yield from numbers(v, f"{prefix}[{i}]")
    elif isinstance(doc, (int, float)) and not isinstance(doc, bool):
        yield prefix, float(doc)


def compare_eval(a_path, b_path, rel):
    skip = ("seconds", "tokens_per_second", "ranks")
    a = {k: v for k, v in numbers(json.load(open(a_path))) if not k.endswith(skip)}
    b = {k: v for k, v in numbers(json.load(open(b_path))) if not k.endswith(skip)}
    if sorted(a) != sorted(b):
        sys.exit(f"fields differ: {sorted(set(a) ^ set(b))}")
    for k in sorted(a):
        if abs(a[k] - b[k]) > rel * max(abs(a[k]), 1e-30):
            sys.exit(f"{k}: {a[k]!r} vs {b[k]!r}")
    same = all(a[k] == b[k] for k in a)
    print(f"{len(a)} numbers: " + ("identical" if same else f"within {rel:g}"))


if __name__ == "__main__":
    if len(sys.argv) != 5 or sys.argv[1] not in ("folders", "eval"):
        sys.exit(__doc__)
    (compare_folders if sys.argv[1] == "folders" else compare_eval)(sys.argv[2], sys.argv[3], float(sys.argv[4]))
