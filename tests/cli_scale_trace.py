#!/usr/bin/env python3
"""bench/scale_trace.py: a scaled copy replays with the live peak scaled (sizes rounded down), the
same steps and events, the sidecar copied; bad factors and files are refused."""
import json
import os
import subprocess
import sys
import tempfile

from checks import check, finish, write_stepped_trace

nofrag, script = sys.argv[1], sys.argv[2]
MIB = 1 << 20


def replay(path):
    out = subprocess.run([nofrag, "replay", "--json", path], capture_output=True, text=True)
    check(out.returncode == 0, f"replay of {os.path.basename(path)}: {out.stderr.strip()}")
    return json.loads(out.stdout.splitlines()[0]) if out.returncode == 0 else {}


def scale(*args):
    return subprocess.run([sys.executable, script, *args], capture_output=True, text=True)


with tempfile.TemporaryDirectory() as d:
    src = write_stepped_trace(d, "job", [10 * MIB, 20 * MIB + 1000, 6 * MIB, 14 * MIB])
    for factor, out_name in ((0.25, "quarter.csv.gz"), (3, "triple.csv")):
        out = os.path.join(d, out_name)
        res = scale(src, str(factor), out)
        check(res.returncode == 0, f"scaled by {factor}: {res.stderr.strip()}")
        check(os.path.exists(out.replace(".csv.gz", ".steps").replace(".csv", ".steps")), f"{out_name}: sidecar copied")
        a, b = replay(src), replay(out)
        if a and b:
            expected = int((20 * MIB + 1000) * factor)
            check(b["peak_live_bytes"] == expected, f"x{factor}: live peak {b['peak_live_bytes']} == {expected}")
            check(b["steps"] == a["steps"] and b["events"] == a["events"], f"x{factor}: same steps and events")
    for bad in ("0", "-1", "x"):
        res = scale(src, bad, os.path.join(d, "bad.csv"))
        check(res.returncode != 0 and "FACTOR" in res.stderr, f"factor {bad!r} refused")
    junk = os.path.join(d, "junk.csv")
    with open(junk, "w") as f:
        f.write("a,b\n1,2\n")
    res = scale(junk, "0.5", os.path.join(d, "out.csv"))
    check(res.returncode != 0 and "not an RMM CSV log" in res.stderr, "a file that is not a trace is refused")
finish()
