#!/usr/bin/env python3
"""`nofrag replay --json --per-step` on a stepped trace: the per-step series must add up to the
totals the replay reports, and the window averages must be the mean of the steps after step 3.
A trace name that needs escaping must come out as valid JSON. With a third argument
(bench/step_windows.py): its per-window figures must be the means of the
steps in each window, and it must refuse input without per-step figures."""
import json
import os
import subprocess
import sys
import tempfile

from checks import check, finish

nofrag, trace = sys.argv[1], sys.argv[2]
windows_script = sys.argv[3] if len(sys.argv) > 3 else None


def check_windows(out, d, width):
    """step_windows.py's rows are the means of the steps 4.., `width` at a time."""
    res = subprocess.run([sys.executable, windows_script, str(width)], input=out, capture_output=True, text=True)
    check(res.returncode == 0, f"step_windows.py ran: {res.stderr.strip()}")
    rows = [line.split() for line in res.stdout.splitlines() if line.strip()[:1].isdigit()]
    remaps, calls = d["step_remaps"], d["step_calls"]
    starts = list(range(4, len(remaps), width))
    check(len(rows) == len(starts), f"one row a window ({len(rows)} rows, {len(starts)} windows)")
    for row, start in zip(rows, starts):
        stop = min(len(remaps), start + width)
        n = stop - start
        check(row[0] == f"{start}-{stop - 1}", f"window {row[0]} spans steps {start}-{stop - 1}")
        check(abs(float(row[1]) - sum(remaps[start:stop]) / n) < 0.051, f"remaps of window {row[0]}")
        check(abs(float(row[2]) - sum(calls[start:stop]) / n) < 0.051, f"calls of window {row[0]}")
        check(int(row[4]) == sum(1 for c in calls[start:stop] if c), f"steps with calls in window {row[0]}")


for extra in ([], ["--capacity-factor", "1.02"]):
    out = subprocess.run([nofrag, "replay", "--json", "--per-step", *extra, trace], check=True,
                         capture_output=True, text=True).stdout
    d = json.loads(out)
    calls, remaps, us = d["step_calls"], d["step_remaps"], d["step_driver_us"]
    check(len(calls) == len(remaps) == len(us) == d["steps"] + 1, "one entry per step plus the lead-in")
    check(sum(calls) == d["backend_calls"], f"step calls add up to backend_calls ({sum(calls)} vs {d['backend_calls']})")
    check(sum(remaps) == d["remaps"], f"step remaps add up to remaps ({sum(remaps)} vs {d['remaps']})")
    check(abs(sum(us) - d["est_driver_us_total"]) <= 0.01 * d["est_driver_us_total"] + 1, "driver time adds up")
    window = calls[4:]  # slot k holds step k-1; the window starts at step 3
    check(abs(sum(window) / len(window) - d["driver_calls_per_step"]) < 1e-3, "window average of calls")
    check(abs(sum(remaps[4:]) / len(window) - d["remaps_per_step"]) < 1e-3, "window average of remaps")
    per_kind = d["calls_per_step"]
    check(abs(sum(per_kind.values()) - d["driver_calls_per_step"]) < 0.01, "primitives add up to calls per step")
    check(d["failed_allocs"] == 0, "no failed allocation")
    # The backend's measured time: some for the calls made, the window's share within the total.
    check(d["backend_us_total"] > 0, f"backend time measured ({d['backend_us_total']} us)")
    check(d["backend_us_per_step"] * len(window) <= d["backend_us_total"] + 0.1 * len(window),
          "the window's backend time is within the total")
    if windows_script:
        check_windows(out, d, 10)

# A trace whose file name holds a quote, a backslash and a tab: the JSON must still parse, with
# the name as it is.
with tempfile.TemporaryDirectory() as d:
    odd_name = 'odd "name\\\tx'
    odd = os.path.join(d, odd_name + ".csv")
    with open(odd, "w") as f:
        f.write("Thread,Time,Action,Pointer,Size,Stream\n1,09:00:00.000001,allocate,0x10000000,4096,0\n")
    res = subprocess.run([nofrag, "replay", "--json", "--per-step", odd], capture_output=True, text=True)
    try:
        parsed = json.loads(res.stdout.splitlines()[0])
    except (ValueError, IndexError):
        parsed = {}
    check(parsed.get("trace") == odd_name, f"a trace name with a quote, a backslash and a tab is escaped ({res.stdout[:80]!r})")

bad = subprocess.run([nofrag, "replay", "--per-step", trace], capture_output=True, text=True)
check(bad.returncode == 2 and "--per-step needs --json" in bad.stderr, "--per-step without --json is refused")

if windows_script:
    plain = subprocess.run([nofrag, "replay", "--json", trace], check=True, capture_output=True, text=True).stdout
    res = subprocess.run([sys.executable, windows_script], input=plain, capture_output=True, text=True)
    check(res.returncode != 0 and "--per-step" in res.stderr, "step_windows.py refuses input without per-step figures")

finish()
