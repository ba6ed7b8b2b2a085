"""Issue 3's goals, trace by trace: replays each trace without a cap and at a 1.02x cap and says
which goal it meets, beside the floor of calls any one-handle-per-page policy must make
(bench/call_floor.py).

usage: python3 bench/placement_goals.py [--nofrag BIN] [--reuse-across-streams] [--json] TRACE...

The goals, averaged over the steps after step 3 (`nofrag replay --json`):
  fail   at --capacity-factor 1.02, no failed allocation;
  moves  at --capacity-factor 1.02, at most 10 page remaps a step;
  held   without a cap, peak physical memory at most 1.03x the live peak;
  calls  without a cap, fewer than 1 backend call a step.
Beside the moves goal, "steady": the moves a step over the steps after step 3 that leave the live
peak where it was ("rising": how many of those steps raise it). A step that raises the live peak
must back more bytes than any before, at places never used, so its moves are paid once as a
job reaches its peak (an evaluation phase, the longest batch yet); the steady figure is what a
job pays again and again, and the average of the goal tends to it as a job runs longer.
A "calls" miss where the floor is 1 or more cannot be helped by placement: the job's live peak
rises after step 3 by more pages than a pool may hold in advance. Beside the moves, their count
per GiB of live peak, which compares jobs of different sizes, and the driver time a step they and
the other calls cost at the cap by the cost model, also as a share of the recorded job's step
("% step": the recording run's own timestamps, host time rather than a measurement synchronised
with the GPU, so a rough figure: jobs re-timed on an H200 stepped in 0.2-1.5x the recorded time,
README "What the misses cost"). Prints a table and the count of
traces meeting each goal; with --json, one object per trace instead. Exits 0 either way (a
report, not a test); 2 on bad input.
"""
import argparse
import concurrent.futures
import functools
import json
import os
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import call_floor  # noqa: E402

WARMUP_STEPS = 3  # tools/replay.h: REPLAY_WARMUP_STEPS; per-step slot 0 is before the first step
CAP_FACTOR = 1.02
MAX_MOVES = 10.0
MAX_HELD = 1.03
MAX_CALLS = 1.0  # strictly fewer
PAGE_BYTES = 2 << 20  # the replay's default page, which the floor assumes


DEFAULT_NOFRAG = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "build", "nofrag")


def check_inputs(ap, binary, traces):
    """Refuses (argparse's exit 2) a missing nofrag binary or trace."""
    if not os.access(binary, os.X_OK):
        ap.error(f"no nofrag binary at {binary} (build it, or pass --nofrag)")
    for path in traces:
        if not os.path.isfile(path):
            ap.error(f"no such trace: {path}")


def replay(binary, path, extra):
    """`nofrag replay --json EXTRA PATH`: the trace's object; exits with the replay's error."""
    res = subprocess.run([binary, "replay", "--json", *extra, path], capture_output=True, text=True)
    if res.returncode != 0:
        raise SystemExit(f"{path}: nofrag replay failed: {res.stderr.strip()}")
    return json.loads(res.stdout.splitlines()[0])


def steady_moves(capped):
    """(moves a step over the window's steps that do not raise the live peak, how many do): from
    `--per-step` (slot k + 1 is step k); (None, 0) without step marks."""
    remaps, peaks = capped.get("step_remaps"), capped.get("step_live_peak")
    if not remaps:
        return None, 0
    steady, rising, highest = [], 0, 0
    for slot, (moves, peak) in enumerate(zip(remaps, peaks)):
        raised = peak > highest
        highest = max(highest, peak)
        if slot <= WARMUP_STEPS:
            continue
        if raised:
            rising += 1
        else:
            steady.append(moves)
    return (sum(steady) / len(steady) if steady else None), rising


def measure(binary, path, streams=False):
    extra = ["--reuse-across-streams"] if streams else []
    free = replay(binary, path, extra)
    capped = replay(binary, path, extra + ["--capacity-factor", str(CAP_FACTOR), "--per-step"])
    steady, rising = steady_moves(capped)
    floor = call_floor.floor_calls(path, PAGE_BYTES, MAX_HELD)[3]
    row = {
        "trace": os.path.basename(path).split(".")[0],
        "failed_at_cap": capped["failed_allocs"],
        "moves_per_step_at_cap": capped["remaps_per_step"],
        "steady_moves_per_step_at_cap": steady,
        "rising_steps": rising,
        # Pages a step grow with a job's size (docs/placement.md, "Smaller and larger jobs"); per
        # GiB of live peak they compare jobs of different sizes.
        "moves_per_step_per_gib": capped["remaps_per_step"] / (capped["peak_live_bytes"] / (1 << 30))
        if capped["peak_live_bytes"] else 0.0,
        # What the moves and calls cost a step at the cap, by the cost model (docs/cost-model.md,
        # within a few percent of the driver's measured time over all traces).
        "driver_ms_per_step_at_cap": capped["est_driver_us_per_step"] / 1000,
        # That time as a share of the recorded job's step (the trace's Time column: the recording
        # run's host clock, a rough figure; see the docstring).
        "driver_share_of_step_at_cap": capped["driver_share_of_step"],
        "held_over_live": free["peak_mapped_bytes"] / free["peak_live_bytes"] if free["peak_live_bytes"] else 1.0,
        "calls_per_step": free["driver_calls_per_step"],
        "floor_calls_per_step": floor,
    }
    row["met"] = {
        "fail": row["failed_at_cap"] == 0,
        "moves": row["moves_per_step_at_cap"] <= MAX_MOVES,
        "held": row["held_over_live"] <= MAX_HELD,
        "calls": row["calls_per_step"] < MAX_CALLS,
    }
    return row


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("traces", nargs="+")
    ap.add_argument("--nofrag", default=DEFAULT_NOFRAG)
    ap.add_argument("--reuse-across-streams", action="store_true",
                    help="replay as the PyTorch front end runs jobs with several streams")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    check_inputs(ap, args.nofrag, args.traces)
    # Processes, not threads: the floor reads each trace in Python.
    with concurrent.futures.ProcessPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        rows = list(pool.map(functools.partial(measure, args.nofrag, streams=args.reuse_across_streams), args.traces))
    if args.json:
        for row in rows:
            print(json.dumps(row))
        return 0
    mark = {True: "yes", False: "NO"}
    print(f"{'trace':30s} {'failed':>6s} {'moves/step':>10s} {'steady':>6s} {'rising':>6s} {'per GiB':>7s} {'ms/step':>7s} {'% step':>6s} {'held/live':>9s} "
          f"{'calls/step':>10s} {'floor':>6s}  goals met: fail moves held calls")
    for r in rows:
        m = r["met"]
        share = r["driver_share_of_step_at_cap"]
        share = f"{100 * share:6.2f}" if share is not None else f"{'-':>6s}"
        steady = r["steady_moves_per_step_at_cap"]
        steady = f"{steady:6.1f}" if steady is not None else f"{'-':>6s}"
        print(f"{r['trace']:30s} {r['failed_at_cap']:6d} {r['moves_per_step_at_cap']:10.1f} {steady} {r['rising_steps']:6d} "
              f"{r['moves_per_step_per_gib']:7.2f} {r['driver_ms_per_step_at_cap']:7.2f} {share} {r['held_over_live']:9.4f} "
              # two decimals near the goal of one, so 0.98 does not print as 1.0
              f"{r['calls_per_step']:10.{2 if r['calls_per_step'] < 10 else 1}f} "
              f"{r['floor_calls_per_step']:6.1f}  "
              f"{mark[m['fail']]:>4s} {mark[m['moves']]:>5s} {mark[m['held']]:>4s} {mark[m['calls']]:>5s}")
    n = len(rows)
    for goal, text in (("fail", f"no failed allocation at {CAP_FACTOR}x"),
                       ("moves", f"at most {MAX_MOVES:g} moves a step at {CAP_FACTOR}x"),
                       ("held", f"held at most {MAX_HELD}x live without a cap"),
                       ("calls", f"fewer than {MAX_CALLS:g} call a step without a cap")):
        print(f"{text}: {sum(r['met'][goal] for r in rows)} of {n}")
    steady_met = sum(r["steady_moves_per_step_at_cap"] is not None and r["steady_moves_per_step_at_cap"] <= MAX_MOVES
                     for r in rows)
    print(f"  at most {MAX_MOVES:g} moves a step at {CAP_FACTOR}x in the steps that leave the live peak where it was: "
          f"{steady_met} of {n}")
    shares = [(r["driver_share_of_step_at_cap"], r["trace"]) for r in rows if r["driver_share_of_step_at_cap"] is not None]
    if shares:
        top, name = max(shares)
        print(f"driver time a step at {CAP_FACTOR}x, as a share of the recorded step: at most {100 * top:.2f}% ({name})")
    out_of_reach = sum(not r["met"]["calls"] and r["floor_calls_per_step"] >= MAX_CALLS for r in rows)
    print(f"  of the calls misses, {out_of_reach} have a floor of {MAX_CALLS:g} or more (no one-handle-per-page"
          f" policy can meet them)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
