#!/usr/bin/env python3
"""Copies a float32 safetensors file, flipping the lowest mantissa bit of each element of the
tensors whose name contains one of --tensors with probability 1/2 (seeded; seed 0 copies the file
unchanged). A change of one unit in the last place: ~6e-8 relative.

    flip_mantissa_bits.py IN.safetensors OUT.safetensors --tensors k_proj[,q_proj] --seed N
"""
import argparse
import array
import json
import random
import struct

p = argparse.ArgumentParser()
p.add_argument("src")
p.add_argument("dst")
p.add_argument("--tensors", required=True)
p.add_argument("--seed", type=int, default=1)
a = p.parse_args()
names = a.tensors.split(",")
data = bytearray(open(a.src, "rb").read())
n = struct.unpack("<Q", data[:8])[0]
header = json.loads(data[8:8 + n])
rng = random.Random(a.seed)
for key, info in sorted(header.items()):
    if key == "__metadata__" or a.seed == 0 or not any(s in key for s in names):
        continue
    if info["dtype"] != "F32":
        raise SystemExit(f"{a.src}: {key} is {info['dtype']}, this script flips F32 bits only")
    begin, end = (8 + n + o for o in info["data_offsets"])
    words = array.array("I", bytes(data[begin:end]))
    for i in range(len(words)):
        words[i] ^= rng.getrandbits(1)
    data[begin:end] = words.tobytes()
open(a.dst, "wb").write(data)
