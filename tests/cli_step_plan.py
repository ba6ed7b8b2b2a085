#!/usr/bin/env python3
"""bench/step_plan.py on small traces written here: a step whose blocks a plan can lay out within
its live peak gives 1.0, repeated steps match the next one whole, steps whose first size changes
match none of it, and a file that is not an RMM log, or too short, is refused."""
import json
import os
import subprocess
import sys
import tempfile

from checks import check, finish, write_three_block_steps as write

script = sys.argv[1]
MIB = 1 << 20


def run(*args):
    return subprocess.run([sys.executable, script, *args], capture_output=True, text=True)


with tempfile.TemporaryDirectory() as d:
    repeat = write(d, "repeat", [2 * MIB] * 10)
    varying = write(d, "varying", [2 * MIB + 512 * (k % 2) for k in range(10)])
    res = run("--json", repeat, varying)
    check(res.returncode == 0, f"step_plan.py ran: {res.stderr.strip()}")
    out = [json.loads(line) for line in res.stdout.splitlines()]
    check(len(out) == 2, "one line a trace")
    if len(out) == 2:
        r, v = out
        check(r["trace"] == "repeat" and r["steps_looked_at"] >= 1, f"trace name, steps ({r})")
        check(r["planned_over_peak_max"] == 1.0, f"planned within the live peak ({r['planned_over_peak_max']})")
        check(r["next_step_match_median"] == 1.0, f"repeated steps match whole ({r['next_step_match_median']})")
        check(v["next_step_match_median"] == 0.0, f"a changed first size matches nothing ({v['next_step_match_median']})")
        check(v["planned_over_peak_max"] == 1.0, "the plan holds with either size")
    bad = os.path.join(d, "bad.csv")
    with open(bad, "w") as f:
        f.write("not,a,log\n")
    open(os.path.join(d, "bad.steps"), "w").write("0\n")
    res = run(bad)
    check(res.returncode != 0 and "not an RMM CSV log" in res.stderr, f"a non-log refused ({res.stderr.strip()})")
    short = write(d, "short", [2 * MIB] * 4)
    res = run(short)
    check(res.returncode != 0 and "fewer than 5 steps" in res.stderr, f"a short trace refused ({res.stderr.strip()})")
finish()
