#!/usr/bin/env python3
"""bench/role_plan.py on small traces written here: repeated steps have one pattern and a plan
within their live peak with nothing overflowing it; steps whose first block grows keep the pattern
but overflow the plan; steps freeing in another order every other step never repeat the pattern
of the step before; a trace too short is refused."""
import json
import os
import subprocess
import sys
import tempfile

from checks import check, finish

script = sys.argv[1]
MIB = 1 << 20


def write(directory, name, first_sizes, swapped=()):
    """One 1 MiB block alive throughout, then a step per entry: A (first_sizes[k]) and B (4 MiB)
    allocated, A freed, C (4 MiB) allocated, B and C freed (C first in the steps listed in
    `swapped`)."""
    rows, starts = [], []
    t = [0]

    def row(action, ptr, size):
        t[0] += 1
        rows.append(f"1,09:00:{t[0] // 1000000:02d}.{t[0] % 1000000:06d},{action},{hex(ptr)},{size},0")
    row("allocate", 0x1000, MIB)
    for k, a in enumerate(first_sizes):
        starts.append(len(rows))
        base = 0x10000000 + k * 0x10000000
        row("allocate", base, a)
        row("allocate", base + 0x1000000, 4 * MIB)
        row("free", base, a)
        row("allocate", base + 0x2000000, 4 * MIB)
        last = [base + 0x1000000, base + 0x2000000]
        for ptr in (reversed(last) if k in swapped else last):
            row("free", ptr, 4 * MIB)
    path = os.path.join(directory, name + ".csv")
    with open(path, "w") as f:
        f.write("Thread,Time,Action,Pointer,Size,Stream\n" + "\n".join(rows) + "\n")
    with open(os.path.join(directory, name + ".steps"), "w") as f:
        f.write("\n".join(map(str, starts)) + "\n")
    return path


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
