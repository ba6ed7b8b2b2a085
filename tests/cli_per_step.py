#!/usr/bin/env python3
"""`nofrag replay --json --per-step` on a stepped trace: the per-step series must add up to the
totals the replay reports, and the window averages must be the mean of the steps after step 3."""
import json
import subprocess
import sys

from checks import check, finish

nofrag, trace = sys.argv[1], sys.argv[2]

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

bad = subprocess.run([nofrag, "replay", "--per-step", trace], capture_output=True, text=True)
check(bad.returncode == 2 and "--per-step needs --json" in bad.stderr, "--per-step without --json is refused")

finish()
