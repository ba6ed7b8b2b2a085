"""How close to the live peak a layout planned with the whole step known in advance would come,
and whether steps repeat closely enough for a pool to replay such a plan.

usage: python3 bench/step_plan.py [--samples N] [--json] TRACE.csv.gz...

For sampled steps after step 3 (N of them, spread evenly; default 7), the step's allocations are
split into those allocated and freed inside the step ("transient") and the rest (alive across a
step boundary). The transient ones are placed offline, biggest first, each at the lowest offset
where it overlaps no placed block alive at the same time, in the smallest gap that fits (the
greedy-by-size planning of inference memory planners). The planned footprint plus the largest
live total of the rest, over the step's live peak, is what a pool that knew the step in advance
could hold (in bytes, before rounding to pages). Then, for each sampled step, the share of its
allocation sequence (size and whether freed in the step) that matches the next step's from the
start: a plan of one step can be replayed on the next only as far as they match.

Reads the same files as `nofrag replay` (RMM CSV, gzip or plain, with the NAME.steps sidecar);
sizes rounded up to 512 bytes as the pool does. Prints a line a trace; with --json, one JSON
object a trace instead. Slow: a minute or two a trace of thousands of allocations a step.
"""
import argparse
import gzip
import json
import os
import statistics

ALIGN = 512
HEADER = "Thread,Time,Action,Pointer,Size,Stream"


def load(path):
    base = path[:-3] if path.endswith(".gz") else path
    base = base[:-4] if base.endswith(".csv") else base
    with open(base + ".steps") as f:
        starts = [int(line) for line in f if line.strip() and not line.startswith("#")]
    opener = gzip.open if path.endswith(".gz") else open
    events = []
    with opener(path, "rt") as f:
        if f.readline().strip() != HEADER:
            raise SystemExit(f"{path}: not an RMM CSV log")
        for line in f:
            fields = line.split(",")
            events.append((fields[2], fields[3], int(fields[4])))
    return starts, events


def lifetimes(events):
    """[alloc event, free event (len(events) if never), rounded size] per allocation."""
    open_at, allocs = {}, []
    for i, (action, ptr, size) in enumerate(events):
        if action == "allocate":
            open_at[ptr] = len(allocs)
            allocs.append([i, len(events), (size + ALIGN - 1) // ALIGN * ALIGN])
        elif action == "free" and ptr in open_at:
            allocs[open_at.pop(ptr)][1] = i
    return allocs


def live_max(blocks, lo, hi):
    changes = []
    for b, e, size in blocks:
        changes += [(max(b, lo), size), (min(e, hi), -size)]
    changes.sort(key=lambda c: (c[0], c[1]))
    current = peak = 0
    for _, delta in changes:
        current += delta
        peak = max(peak, current)
    return peak


def plan_footprint(transient):
    """Greedy by size, best gap: the highest offset + size reached."""
    placed, footprint = [], 0
    for b, e, size in sorted(transient, key=lambda t: -t[2]):
        busy = sorted((off, off + s) for (b2, e2, off, s) in placed if b2 < e and b < e2)
        best, prev = None, 0
        for start, end in busy:
            if start - prev >= size and (best is None or start - prev < best[1]):
                best = (prev, start - prev)
            prev = max(prev, end)
        offset = best[0] if best else prev
        placed.append((b, e, offset, size))
        footprint = max(footprint, offset + size)
    return footprint


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("traces", nargs="+")
    ap.add_argument("--samples", type=int, default=7, help="steps looked at per trace (default 7)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    if args.samples < 1:
        raise SystemExit("--samples must be at least 1")
    if not args.json:
        print(f"{'trace':28} {'planned/peak: median':>21} {'max':>7}  {'sequence matching the next step: median':>40}")
    for path in args.traces:
        starts, events = load(path)
        allocs = lifetimes(events)
        candidates = list(range(3, len(starts) - 1))
        name = os.path.basename(path).split(".")[0]
        if not candidates:
            raise SystemExit(f"{path}: fewer than 5 steps, none after step 3 with a next one")
        stride = max(1, len(candidates) // args.samples)
        ratios, matches = [], []
        for step in candidates[::stride][:args.samples]:
            lo, hi = starts[step], starts[step + 1]
            nxt = starts[step + 2] if step + 2 < len(starts) else len(events)
            inside = [a for a in allocs if a[0] < hi and a[1] > lo]
            transient = [a for a in inside if a[0] >= lo and a[1] < hi]
            rest = [a for a in inside if not (a[0] >= lo and a[1] < hi)]
            peak = live_max(inside, lo, hi)
            ratios.append((live_max(rest, lo, hi) + plan_footprint(transient)) / peak)
            seq = [(s, e < hi) for b, e, s in allocs if lo <= b < hi]
            seq_next = [(s, e < nxt) for b, e, s in allocs if hi <= b < nxt]
            same = 0
            for x, y in zip(seq, seq_next):
                if x != y:
                    break
                same += 1
            matches.append(same / len(seq) if seq else 0.0)
        if args.json:
            print(json.dumps({"trace": name, "steps_looked_at": len(ratios),
                              "planned_over_peak_median": round(statistics.median(ratios), 5),
                              "planned_over_peak_max": round(max(ratios), 5),
                              "next_step_match_median": round(statistics.median(matches), 4)}))
        else:
            print(f"{name:28} {statistics.median(ratios):21.4f} {max(ratios):7.4f}  "
                  f"{statistics.median(matches):40.2f}")


if __name__ == "__main__":
    main()
