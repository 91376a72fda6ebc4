#!/usr/bin/env python3
"""How close each bound came: for every passed `CHECK(a < b)` in Catch2 logs written with `-s`,
the largest a / b over the times that line ran, one column per log (e.g. one log per OpenBLAS
kernel family). Usage: scripts/catch2_margins.py LOG [LOG ...]"""
import collections
import re
import sys

RESULT = re.compile(r"^\S*/([^/]+_test\.cc):(\d+): (PASSED|FAILED):")
LESS = re.compile(r"^(-?[0-9.eE+-]+)f? < (-?[0-9.eE+-]+)f?$")


def worst_ratios(path):
    worst = collections.defaultdict(float)
    where = None
    lines = open(path, encoding="utf-8", errors="replace").read().splitlines()
    for i, line in enumerate(lines):
        m = RESULT.match(line)
        if m:  # a failed check's expansion is not a margin
            where = f"{m.group(1)}:{m.group(2)}" if m.group(3) == "PASSED" else None
        elif line.strip() == "with expansion:" and where and i + 1 < len(lines):
            m = LESS.match(lines[i + 1].strip())
            if m and float(m.group(2)) > 0:
                worst[where] = max(worst[where], float(m.group(1)) / float(m.group(2)))
    return worst


def main():
    logs = [worst_ratios(p) for p in sys.argv[1:]]
    keys = sorted(set().union(*logs), key=lambda k: (k.split(":")[0], int(k.split(":")[1])))
    print("check | " + " | ".join(sys.argv[1:]))
    for k in keys:
        print(k + " | " + " | ".join(f"{log[k]:.3g}" if k in log else "-" for log in logs))


if __name__ == "__main__":
    main()
