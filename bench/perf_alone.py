#!/usr/bin/env python3
"""Where a process's main thread runs alone (issue 27: why 2 threads are not 2x 1 thread).

    perf record -F 499 -g -o P.data kvfold convert ... --threads 2
    perf script -i P.data -F tid,time,ip,sym | python3 bench/perf_alone.py [BIN_SECONDS]

Cuts the samples into bins of BIN_SECONDS (default 0.02); a bin where no thread but the first
one sampled (the main thread) is "alone". Prints the main thread's samples, those in bins alone
(seconds at the sampling rate are samples / rate), and the innermost kvfold function and the
leaf symbol of the samples alone.
"""
import collections
import re
import sys


def samples(lines):
    current = None
    for line in lines:
        head = re.match(r"\s*(\d+)\s+([\d.]+):\s*$", line)
        if head:
            if current:
                yield current
            current = (int(head.group(1)), float(head.group(2)), [])
        elif line.strip() and current is not None:
            frame = line.strip().split(" ", 1)  # "ADDRESS SYMBOL"
            current[2].append(frame[1] if len(frame) > 1 else frame[0])
    if current:
        yield current


def main():
    width = float(sys.argv[1]) if len(sys.argv) > 1 else 0.02
    all_samples = list(samples(sys.stdin))
    if not all_samples:
        sys.exit("no samples on stdin (perf script -F tid,time,ip,sym)")
    main_tid = all_samples[0][0]
    threads_in_bin = collections.defaultdict(set)
    for tid, t, _ in all_samples:
        threads_in_bin[int(t / width)].add(tid)
    alone, leaves, owners = 0, collections.Counter(), collections.Counter()
    for tid, t, stack in all_samples:
        if tid != main_tid or threads_in_bin[int(t / width)] != {main_tid}:
            continue
        alone += 1
        leaves[stack[0] if stack else "?"] += 1
        owner = next((s for s in stack if "kvfold::" in s), "?")
        owner = owner.replace("(anonymous namespace)::", "")
        owners[re.sub(r"\(.*", "", owner)[:90]] += 1
    print(f"main thread {main_tid}: {sum(1 for s in all_samples if s[0] == main_tid)} samples, "
          f"{alone} in bins of {width} s where no other thread ran")
    print("innermost kvfold function:")
    for name, n in owners.most_common(12):
        print(f"  {n:6d} {name}")
    print("leaf symbol:")
    for name, n in leaves.most_common(12):
        print(f"  {n:6d} {name}")


if __name__ == "__main__":
    main()
