#!/usr/bin/env python3
"""bench/role_plan.py on small traces written here: repeated steps have one pattern and a plan
within their live peak with nothing overflowing it; steps whose first block grows keep the pattern
but overflow the plan; steps freeing in another order every other step never repeat the pattern
of the step before; a trace too short is refused."""
import json
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
    growing = write(d, "growing", [MIB + k * MIB // 4 for k in range(10)])
    swapping = write(d, "swapping", [2 * MIB] * 10, swapped=range(0, 10, 2))
    res = run("--json", repeat, growing, swapping)
    check(res.returncode == 0, f"role_plan.py ran: {res.stderr.strip()}")
    out = [json.loads(line) for line in res.stdout.splitlines()]
    check(len(out) == 3, "one line a trace")
    if len(out) == 3:
        r, g, s = out
        check(r["same_pattern_pairs"] == 1.0 and r["patterns"] == 1, f"one pattern, repeated ({r})")
        check(r["planned_steps"] == r["steps"] - 1, f"every step after the first planned ({r})")
        check(r["span_over_peak_max"] == 1.0 and r["overflow_median"] == 0.0, f"plan within the peak ({r})")
        check(g["same_pattern_pairs"] == 1.0 and g["overflow_median"] > 0, f"a growing block overflows ({g})")
        check(s["same_pattern_pairs"] == 0.0 and s["patterns"] == 2, f"alternating patterns ({s})")
    short = write(d, "short", [2 * MIB] * 4)
    res = run(short)
    check(res.returncode != 0 and "too few steps" in res.stderr, f"a short trace refused ({res.stderr.strip()})")
finish()
