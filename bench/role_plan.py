"""Whether a layout planned by role could be replayed step after step: the one idea for issue 3's
page moves that step_plan.py left untried (docs/placement.md, last sections).

usage: python3 bench/role_plan.py [--json] TRACE.csv.gz...

A step's transient allocations (allocated and freed inside the step) are numbered in allocation
order: allocation k of a step plays role k. Two questions, over the steps after step 3:

  structure   the share of consecutive step pairs whose pattern is the same: the same number of
              transient allocations, allocated and freed in the same order of roles (sizes may
              differ). Where it is the same, role k is the same tensor every step.
  plan        for each step whose pattern is the same as the step before's, a layout planned from
              the steps before it alone (a pool cannot see the future): each role gets the
              largest size it has had in the earlier steps of the same pattern, and the roles are
              placed greedy by size over the pattern's lifetimes (step_plan.py's planner). Its
              footprint plus the live total of the rest, over the step's own live peak, is what a
              pool replaying the plan would span; over the trace's live peak ("of trace"), whether
              the plan fits a cap of 1.02x that peak without aliasing (every virtual page of the
              span backed by a physical page of its own: no page would ever move); "overflow" is
              the share of this step's allocations bigger than their role's planned size (they
              could not use the plan).

A plan spanning close to the live peak with little overflow would give each role the same
virtual place every step, and so the same physical pages, with no page moves; a plan spanning
well above it (roles' maxima not reached together) would need aliasing again. Prints a line a
trace; --json, one object a trace. Sizes rounded to 512 bytes as the pool does. Slow on traces
with thousands of allocations a step (the planner is quadratic).
"""
import argparse
import json
import os
import statistics
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from step_plan import lifetimes, live_max, load, plan_footprint  # noqa: E402

WARMUP_STEPS = 3


def step_pattern(allocs, lo, hi):
    """(pattern, sizes, transient lifetimes) of the step [lo, hi): pattern is the tuple of events
    ('a', k) and ('f', k) in order, k the role (allocation order within the step)."""
    transient = [a for a in allocs if lo <= a[0] and a[1] < hi]
    transient.sort(key=lambda a: a[0])
    events = []
    for k, (b, e, _) in enumerate(transient):
        events += [(b, "a", k), (e, "f", k)]
    events.sort()
    return tuple((kind, k) for _, kind, k in events), [a[2] for a in transient], transient


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("traces", nargs="+")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    if not args.json:
        print(f"{'trace':28} {'same pattern':>12} {'planned steps':>13} {'span/peak: median':>18} {'max':>7} "
              f"{'of trace: max':>14} {'overflow: median':>17}")
    for path in args.traces:
        starts, events = load(path)
        allocs = lifetimes(events)
        name = os.path.basename(path).split(".")[0]
        steps = list(range(WARMUP_STEPS, len(starts) - 1))
        if len(steps) < 2:
            raise SystemExit(f"{path}: too few steps after step {WARMUP_STEPS}")
        seen = {}  # pattern -> per-role largest size so far
        same_pairs, ratios, of_trace, overflows, previous = 0, [], [], [], None
        trace_peak = live_max(allocs, 0, len(events))
        for step in steps:
            lo, hi = starts[step], starts[step + 1]
            pattern, sizes, transient = step_pattern(allocs, lo, hi)
            if previous is not None and pattern == previous:
                same_pairs += 1
            if pattern in seen:
                role_max = seen[pattern]
                planned = [[b, e, role_max[k]] for k, (b, e, _) in enumerate(transient)]
                inside = [a for a in allocs if a[0] < hi and a[1] > lo]
                rest = [a for a in inside if not (lo <= a[0] and a[1] < hi)]
                peak = live_max(inside, lo, hi)
                span = live_max(rest, lo, hi) + plan_footprint(planned)
                ratios.append(span / peak)
                of_trace.append(span / trace_peak)
                overflows.append(sum(s > role_max[k] for k, s in enumerate(sizes)) / max(1, len(sizes)))
                seen[pattern] = [max(m, s) for m, s in zip(role_max, sizes)]
            else:
                seen[pattern] = list(sizes)
            previous = pattern
        result = {"trace": name, "steps": len(steps), "same_pattern_pairs": round(same_pairs / (len(steps) - 1), 4),
                  "patterns": len(seen), "planned_steps": len(ratios),
                  "span_over_peak_median": round(statistics.median(ratios), 5) if ratios else None,
                  "span_over_peak_max": round(max(ratios), 5) if ratios else None,
                  "span_over_trace_peak_max": round(max(of_trace), 5) if of_trace else None,
                  "overflow_median": round(statistics.median(overflows), 4) if overflows else None}
        if args.json:
            print(json.dumps(result))
        else:
            fmt = lambda v, f: "-" if v is None else format(v, f)  # noqa: E731
            print(f"{name:28} {result['same_pattern_pairs']:12.2f} {len(ratios):13d} "
                  f"{fmt(result['span_over_peak_median'], '18.4f')} {fmt(result['span_over_peak_max'], '7.4f')} "
                  f"{fmt(result['span_over_trace_peak_max'], '14.4f')} "
                  f"{fmt(result['overflow_median'], '17.3f')}")
        sys.stdout.flush()


if __name__ == "__main__":
    main()
