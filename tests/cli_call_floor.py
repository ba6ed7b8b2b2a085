#!/usr/bin/env python3
"""bench/call_floor.py on small stepped traces written here: the floor must be the figure worked
out by hand from the live peaks, zero where the live peak never rises after step 3, never above
nofrag's own calls a step (nofrag uses one handle per page, so the floor bounds it), and a file
that is not an RMM log must be refused."""
import json
import os
import subprocess
import sys
import tempfile

from checks import check, finish, write_stepped_trace

nofrag, script = sys.argv[1], sys.argv[2]
MIB = 1 << 20


def run(*args):
    res = subprocess.run([sys.executable, script, "--nofrag", nofrag, "--json", *args], capture_output=True, text=True)
    check(res.returncode == 0, f"call_floor.py ran: {res.stderr.strip()}")
    return [json.loads(line) for line in res.stdout.splitlines()]


with tempfile.TemporaryDirectory() as d:
    # Live peak 10 MiB in the first three steps, 20 MiB in the last three. When the fourth step
    # starts a pool may hold floor(1.03 x 5) = 5 pages; it needs 10, so 5 are created and mapped
    # later: 10 calls over the 3 steps after step 3 (the fourth step's own rise counts).
    rising = write_stepped_trace(d, "rising", [10 * MIB] * 3 + [20 * MIB] * 3)
    flat = write_stepped_trace(d, "flat", [20 * MIB] * 3 + [10 * MIB] * 3)
    out = run(rising, flat)
    check(len(out) == 2, "one line a trace")
    if len(out) == 2:
        r, f = out
        check(r["trace"] == "rising" and r["steps"] == 6, f"trace name and steps ({r['trace']}, {r['steps']})")
        check(r["live_peak_to_step3"] == 10 * MIB and r["live_peak"] == 20 * MIB, "live peaks by step")
        check(abs(r["floor_calls_per_step"] - 10 / 3) < 0.001, f"floor 10/3 calls a step ({r['floor_calls_per_step']})")
        check(r["nofrag_calls_per_step"] is not None and r["nofrag_calls_per_step"] >= r["floor_calls_per_step"],
              f"nofrag's calls a step ({r['nofrag_calls_per_step']}) not below the floor")
        check(f["floor_calls_per_step"] == 0, f"no rise after step 3, no floor ({f['floor_calls_per_step']})")
    # With room for 8% growth held early, the 10 -> 20 MiB rise still needs pages: 10 - 5 = 5.
    (wide,) = run("--held-factor", "1.08", rising)
    check(abs(wide["floor_calls_per_step"] - 10 / 3) < 0.001, "held factor 1.08: still 5 pages to make")
    # Twice the room: 10 pages may be held early, nothing is left to make.
    (double,) = run("--held-factor", "2", rising)
    check(double["floor_calls_per_step"] == 0, f"held factor 2: no floor ({double['floor_calls_per_step']})")
    bad = os.path.join(d, "bad.csv")
    with open(bad, "w") as fh:
        fh.write("a,b,c\n1,2,3\n")
    res = subprocess.run([sys.executable, script, "--nofrag", "", bad], capture_output=True, text=True)
    check(res.returncode != 0 and "not an RMM CSV log" in res.stderr, "a file that is not an RMM log is refused")
finish()
