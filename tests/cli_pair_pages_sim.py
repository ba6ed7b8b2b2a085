#!/usr/bin/env python3
"""bench/pair_pages_sim.py, the model of pages of two sizes: without --pairs it is the oracle's
nearest rule (the same moves as bench/physical_oracle.py on a real layout log); with --pairs a
block of whole pairs moves half as many handles; and a pair claimed for one page pins the other
granule, which the model reports as pages over the cap where single pages fit."""
import os
import re
import subprocess
import sys
import tempfile

from checks import check, finish

nofrag, trace, sim, oracle = sys.argv[1:5]
PAGE = 2 << 20
BASE = 1 << 40


def run(*args):
    res = subprocess.run([sys.executable, *args], capture_output=True, text=True)
    check(res.returncode == 0, f"{args}: exit {res.returncode}: {res.stderr.strip()}")
    return res.stdout


def figures(out):
    """(moves a step, pairs released, pages over the cap) from the model's line."""
    m = re.search(r"([\d.]+) handle moves a step .*?, (\d+) pairs released for singles, (\d+) pages over the cap", out)
    return (float(m.group(1)), int(m.group(2)), int(m.group(3))) if m else (None, None, None)


def write_log(path, cap, steps):
    """A layout log: `steps` is a list of steps, each a list of ('A', first_page, pages) or ('F', first_page)."""
    lines = [f"# nofrag layout log: trace synth base {BASE} page_bytes {PAGE} capacity_pages {cap}"]
    for events in steps:
        lines.append("S")
        for e in events:
            lines.append(f"A {BASE + e[1] * PAGE} {e[2] * PAGE}" if e[0] == "A" else f"F {BASE + e[1] * PAGE}")
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")


with tempfile.TemporaryDirectory() as tmp:
    log = os.path.join(tmp, "real.log")
    subprocess.run([nofrag, "replay", "--capacity-factor", "1.02", "--layout-log", log, trace], check=True,
                   capture_output=True)
    singles = figures(run(sim, log))
    nearest = re.search(r"([\d.]+) page moves a step", run(oracle, log))
    check(nearest is not None and singles[0] == float(nearest.group(1)) > 0,
          f"without --pairs, the oracle's nearest rule ({singles[0]} vs {nearest and nearest.group(1)})")
    check(singles[1:] == (0, 0), "single pages: nothing released, nothing over the cap")

    # Five places of 4 whole pages in turn under a cap of 4 pages: every place beyond the 4 a
    # handle may be mapped at costs moves; as pairs, half as many handles move.
    cycle = os.path.join(tmp, "cycle.log")
    write_log(cycle, 4, [[("A", 4 * (k % 5), 4), ("F", 4 * (k % 5))] for k in range(12)])
    s, p = figures(run(sim, cycle)), figures(run(sim, cycle, "--pairs"))
    check(s[0] and s[0] > 0, f"singles move pages ({s[0]})")
    check(p[0] == s[0] / 2 and p[2] == 0, f"pairs move half as many handles ({p[0]} vs {s[0]}), within the cap")

    # A pair made for a 2-page block, then claimed by a block on its second page only: the first
    # granule is pinned, and a 2-page block after it no longer fits a cap of 3 granules.
    pinned = os.path.join(tmp, "pinned.log")
    write_log(pinned, 3, [[("A", 0, 2), ("F", 0)], [("A", 1, 1), ("A", 2, 2)]])
    check(figures(run(sim, pinned))[2] == 0, "single pages fit the cap")
    check(figures(run(sim, pinned, "--pairs"))[2] == 1, "the pinned granule puts one page over the cap")
finish()
