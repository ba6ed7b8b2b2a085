#!/usr/bin/env python3
"""How often the host waits for the device, trace by trace: `nofrag replay` with the device N trace
events behind the host (--stream-lag), at a 1.02x cap and without a budget as the PyTorch front
end runs by default (a cap the device's size with --hold-near-live), printing host waits
(event_sync calls), event records and queries, and page moves a step after step 3. A host wait
stalls the launch queue until the GPU catches up, which on a job of short steps costs more than
the moves themselves (docs/placement.md, "What an unmap waits for").

usage: python3 bench/host_waits.py [--nofrag BIN] [--lags 256,1024] [--json] TRACE...
Exits 0 (a report, not a test); 2 on bad input.
"""
import argparse
import concurrent.futures
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from placement_goals import DEFAULT_NOFRAG, check_inputs, replay  # noqa: E402

MODES = (("1.02x", ["--capacity-factor", "1.02"]), ("no budget", ["--capacity", "139G", "--hold-near-live"]))


def measure(binary, lags, path):
    rows = []
    for lag in lags:
        for mode, extra in MODES:
            r = replay(binary, path, extra + ["--stream-lag", str(lag)])
            calls = r["calls_per_step"] or {}
            rows.append({"trace": r["trace"], "lag": lag, "mode": mode,
                         "host_waits_per_step": calls.get("event_sync"),
                         "event_records_per_step": calls.get("event_record"),
                         "event_queries_per_step": calls.get("event_query"),
                         "moves_per_step": r["remaps_per_step"]})
    return rows


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("traces", nargs="+")
    ap.add_argument("--nofrag", default=DEFAULT_NOFRAG)
    ap.add_argument("--lags", default="256,1024", help="comma-separated trace events the device runs behind")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    try:
        lags = [int(x) for x in args.lags.split(",")]
    except ValueError:
        ap.error(f"--lags: expected comma-separated counts, got {args.lags!r}")
    if any(lag < 0 for lag in lags):
        ap.error("--lags: counts must not be negative")
    check_inputs(ap, args.nofrag, args.traces)
    with concurrent.futures.ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        results = list(pool.map(lambda p: measure(args.nofrag, lags, p), args.traces))
    rows = [row for rows in results for row in rows]
    if args.json:
        for row in rows:
            print(json.dumps(row))
        return 0
    print(f"{'trace':26s} {'lag':>5s} {'mode':>9s} {'waits/step':>10s} {'records':>8s} {'queries':>8s} {'moves/step':>10s}")
    fmt = lambda v: f"{v:.2f}" if v is not None else "-"  # noqa: E731 (null without step marks)
    for r in rows:
        print(f"{r['trace']:26s} {r['lag']:5d} {r['mode']:>9s} {fmt(r['host_waits_per_step']):>10s} "
              f"{fmt(r['event_records_per_step']):>8s} {fmt(r['event_queries_per_step']):>8s} {fmt(r['moves_per_step']):>10s}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
