#!/usr/bin/env python3
"""Whether a change moved the datapath's per-packet cost, beyond the noise.

Runs two builds of emptcp-bench-datapath alternately, PAIRS times each
(which goes first alternates too, so neither always meets the machine in
the same state), and prints per row the fresh "added" figure of every run
of both, their medians, and a verdict: "faster" or "slower" only when
every run of one build is below every run of the other (with 4 pairs and
no difference between the builds, a chance of 1 in 35 for either
verdict), else "within the spread".

One run of the datapath bench on a shared VM moves its rows by +-15-25 ns
from run to run; a claimed gain smaller than that, read from one run of
each build, is noise. scripts/bench.sh compare REV builds REV's bench in
a worktree of its own and calls this script.

Usage: bench_compare.py --base BIN --head BIN [--pairs N] [--only TEXT]...
"""
import argparse
import math
import re
import statistics
import subprocess
import sys

# Below 4 pairs a verdict would be a coin toss: with 2 pairs, one build's
# runs all fall below the other's by chance one time in 3.
MIN_PAIRS = 4

# A row of the bench's tables: "| name | **123 ns** (100–130) | ...".
ROW = re.compile(r"^\| (?P<name>[^|]+?) \| \*\*(?P<ns>-?\d+) ns\*\*")


def one_run(binary, only):
    args = [binary]
    for o in only:
        args += ["--only", o]
    out = subprocess.run(args, capture_output=True, text=True)
    # The bench exits 1 when a target is missed (its figures still count)
    # and on any other failure (they do not: a run cut short).
    if out.returncode != 0 and "target missed" not in out.stderr:
        sys.exit(f"bench_compare: {binary} failed:\n{out.stdout}\n{out.stderr}")
    rows = {}
    for line in out.stdout.splitlines():
        m = ROW.match(line)
        if m:
            rows[m["name"]] = int(m["ns"])
    if not rows:
        sys.exit(f"bench_compare: {binary} printed no rows:\n{out.stdout}\n{out.stderr}")
    return rows


def verdict(base, head):
    if len(base) < MIN_PAIRS:
        return f"none (fewer than {MIN_PAIRS} pairs)"
    if max(head) < min(base):
        return "faster"
    if min(head) > max(base):
        return "slower"
    return "within the spread"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--base", required=True, help="the bench binary of the base build")
    ap.add_argument("--head", required=True, help="the bench binary of the build under test")
    ap.add_argument("--base-name", default="base")
    ap.add_argument("--head-name", default="head")
    ap.add_argument("--pairs", type=int, default=4)
    ap.add_argument("--only", action="append", default=[])
    a = ap.parse_args()
    runs = {"base": [], "head": []}
    for i in range(a.pairs):
        order = ["base", "head"] if i % 2 == 0 else ["head", "base"]
        for which in order:
            binary = a.base if which == "base" else a.head
            runs[which].append(one_run(binary, a.only))
            print(f"pair {i + 1}/{a.pairs}: {which} done", file=sys.stderr)
    every = runs["base"] + runs["head"]
    names = [n for n in runs["head"][0] if all(n in r for r in every)]
    only_one = sorted({n for r in every for n in r} - set(names))
    print(f"| row (ns added, fresh; {a.pairs} alternated pairs) | {a.base_name}: runs, median "
          f"| {a.head_name}: runs, median | difference of medians | verdict |")
    print("|---|---|---|---|---|")
    moved = 0
    for n in names:
        b = [r[n] for r in runs["base"]]
        h = [r[n] for r in runs["head"]]
        mb, mh = statistics.median(b), statistics.median(h)
        v = verdict(b, h)
        moved += v in ("faster", "slower")
        print(f"| {n} | {' '.join(map(str, b))}: {mb:.0f} | {' '.join(map(str, h))}: {mh:.0f} "
              f"| {mh - mb:+.0f} ns | {v} |")
    # Under no difference every interleaving of the 2n runs is as likely:
    # one build entirely below the other in 2 of C(2n, n).
    chance = math.comb(2 * a.pairs, a.pairs) / 2
    if a.pairs < MIN_PAIRS:
        print(f"\nNo verdicts: {a.pairs} pairs (at least {MIN_PAIRS} needed).")
    else:
        print(f"\n{moved} of {len(names)} rows moved beyond the spread of {a.pairs} pairs "
              f"(a row with no real difference gets a verdict 1 time in {chance:.0f}).")
    if only_one:
        print("Rows not in every run (a row one build lacks), not compared: " + "; ".join(only_one))


if __name__ == "__main__":
    main()
