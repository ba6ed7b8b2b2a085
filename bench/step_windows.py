"""Per-window averages of `nofrag replay --json --per-step` output: whether a long job's page moves,
backend calls and driver time settle, stay level or creep up as it runs.

usage: nofrag replay --json --per-step [options] TRACE... | python3 bench/step_windows.py [WINDOW]
WINDOW: steps per window (default 50). Windows start after step 3, like the replay's averages.
"""
import json
import sys


def report(d, window):
    remaps, calls, us = d["step_remaps"], d["step_calls"], d["step_driver_us"]
    cap = d["capacity_bytes"]
    print(f"{d['trace']}: cap {cap / d['peak_live_bytes']:.3f} x peak live" if cap else f"{d['trace']}: no cap",
          f"| held / live {d['overhead_ratio']:.4f} | failed {d['failed_allocs']}"
          f" | after step 3: {d['remaps_per_step']:.2f} remaps, {d['driver_calls_per_step']:.2f} calls a step")
    print("  steps      remaps/step  calls/step  driver us/step  steps with calls")
    for start in range(4, len(remaps), window):
        stop = min(len(remaps), start + window)
        n = stop - start
        busy = sum(1 for c in calls[start:stop] if c)
        print(f"  {start:4d}-{stop - 1:<4d} {sum(remaps[start:stop]) / n:11.1f} {sum(calls[start:stop]) / n:11.1f}"
              f" {sum(us[start:stop]) / n:15.0f}  {busy:6d} of {n}")


def main():
    window = int(sys.argv[1]) if len(sys.argv) > 1 else 50
    if window < 1:
        raise SystemExit("WINDOW must be at least 1")
    for line in sys.stdin:
        if not line.strip():
            continue
        d = json.loads(line)
        if "step_remaps" not in d:
            raise SystemExit("input lacks per-step figures: run nofrag replay with --json --per-step")
        report(d, window)


if __name__ == "__main__":
    main()
