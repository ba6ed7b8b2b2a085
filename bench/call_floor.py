"""The fewest backend calls a step that any policy could make on a trace without a cap, given how
its live peak rises after the warm-up, next to nofrag's figure.

usage: python3 bench/call_floor.py [--page-size BYTES] [--held-factor F] TRACE.csv.gz...

Issue 3 asks for fewer than one backend call a step after step 3 without a cap, while peak
physical memory stays within 1.03x the peak live bytes. A pool that does not know the future can
hold at most F x (the live peak so far) when the fourth step starts (the replay's averages cover
the steps after step 3) without risking that bound (the job's live peak may never rise again).
Every physical page it needs beyond that, to hold the job's final live peak, is created and mapped
later: with one driver handle per page, at least
two calls (cuMemCreate, cuMemMap) each. So

    floor calls a step = 2 x max(0, ceil(final peak / page) - floor(F x peak to step 3 / page))
                         / steps after step 3

is a lower bound for every policy that uses one handle per page (nofrag does: a handle of several
pages can only be mapped whole, and pins all its pages to one place; docs/placement.md, "Chunks").
Where the floor is 1 or more, that goal cannot be met on the trace by placement alone.

Reads the same files as `nofrag replay` (RMM CSV, gzip or plain, with the NAME.steps sidecar);
sizes are rounded up to 512 bytes, as the pool does. Prints one line per trace; with --json, one
JSON object per trace instead.
"""
import argparse
import gzip
import json
import math
import os
import subprocess
import sys

WARMUP_STEPS = 3  # the replay's REPLAY_WARMUP_STEPS: averages start after step 3
ALIGN = 512
HEADER = "Thread,Time,Action,Pointer,Size,Stream"  # an RMM CSV log's first line


def open_trace(path):
    return gzip.open(path, "rt") if path.endswith(".gz") else open(path)


def steps_path(path):
    base = path[:-3] if path.endswith(".gz") else path
    return (base[:-4] if base.endswith(".csv") else base) + ".steps"


def step_starts(path):
    sidecar = steps_path(path)
    if not os.path.exists(sidecar):
        return []
    with open(sidecar) as f:
        return [int(line) for line in f if line.strip() and not line.startswith("#")]


def live_peaks_by_step(path):
    """The running maximum of live bytes at the end of each step (index k: steps 0..k)."""
    starts = step_starts(path)
    live, peak, sizes = 0, 0, {}
    peaks = []
    step = -1  # rows before the first step mark count towards step 0
    with open_trace(path) as f:
        header = f.readline().strip()
        if header != HEADER:
            raise SystemExit(f"{path}: not an RMM CSV log (header {header!r})")
        for row, line in enumerate(f):
            while step + 1 < len(starts) and row >= starts[step + 1]:
                if step >= 0:
                    peaks.append(peak)
                step += 1
            fields = line.split(",")
            action, ptr, size = fields[2], fields[3], int(fields[4])
            if action == "allocate":
                rounded = (size + ALIGN - 1) // ALIGN * ALIGN
                sizes[ptr] = rounded
                live += rounded
                peak = max(peak, live)
            elif action == "free" and ptr in sizes:
                live -= sizes.pop(ptr)
    peaks.append(peak)
    while len(peaks) < max(1, len(starts)):
        peaks.append(peak)
    return peaks


def floor_calls(path, page_size=2 << 20, held_factor=1.03):
    """(steps, live peak to step 3, final live peak, floor calls a step) of a trace."""
    peaks = live_peaks_by_step(path)
    if len(peaks) <= WARMUP_STEPS:  # the replay averages over the whole trace then
        window, early = 1, 0
    else:  # the replay's window starts where step WARMUP_STEPS (0-based) does
        window, early = len(peaks) - WARMUP_STEPS, peaks[WARMUP_STEPS - 1]
    final = peaks[-1]
    pages_needed = math.ceil(final / page_size)
    pages_held_early = math.floor(held_factor * early / page_size)
    return len(peaks), early, final, 2 * max(0, pages_needed - pages_held_early) / window


def nofrag_calls(path, replay):
    """nofrag's calls a step after step 3 without a cap (nofrag replay --json), or None."""
    if not replay:
        return None
    try:
        out = subprocess.run([replay, "replay", "--json", path], capture_output=True, text=True, check=True)
    except (OSError, subprocess.CalledProcessError):
        return None
    return json.loads(out.stdout)["driver_calls_per_step"]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("traces", nargs="+")
    ap.add_argument("--page-size", type=int, default=2 << 20, help="bytes a driver handle holds (default 2 MiB)")
    ap.add_argument("--held-factor", type=float, default=1.03, help="held / live bound (default 1.03)")
    ap.add_argument("--nofrag", default=os.path.join(os.path.dirname(__file__), "..", "build", "nofrag"),
                    help="the nofrag binary, for its own figure beside the floor ('' to skip)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    if args.page_size <= 0 or args.held_factor < 1:
        raise SystemExit("--page-size must be positive and --held-factor at least 1")
    if not args.json:
        print(f"{'trace':34s} {'steps':>5s} {'live to step 3':>14s} {'final live':>10s} "
              f"{'floor calls/step':>16s} {'nofrag calls/step':>17s}")
    for path in args.traces:
        steps, early, final, floor = floor_calls(path, args.page_size, args.held_factor)
        name = os.path.basename(path).split(".")[0]
        ours = nofrag_calls(path, args.nofrag)
        if args.json:
            print(json.dumps({"trace": name, "steps": steps, "live_peak_to_step3": early,
                              "live_peak": final, "floor_calls_per_step": round(floor, 3),
                              "nofrag_calls_per_step": ours}))
        else:
            gib = 1 << 30
            print(f"{name:34s} {steps:5d} {early / gib:11.3f} GiB {final / gib:6.3f} GiB "
                  f"{floor:16.1f} {'-' if ours is None else f'{ours:17.1f}'}")


if __name__ == "__main__":
    sys.exit(main())
