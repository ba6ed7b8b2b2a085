#!/usr/bin/env python3
"""`nofrag replay --layout-log`: the log names the page size and cap the replay used, every free
names a live block, no two live blocks overlap, and the step marks match the trace's steps; then
bench/physical_oracle.py reads it (and with --blocks lists the allocations that moved pages,
adding up to its total), and refuses a log from a replay without a cap."""
import bisect
import json
import os
import subprocess
import sys
import tempfile

from checks import check, finish

nofrag, trace, oracle = sys.argv[1], sys.argv[2], sys.argv[3]
moving_trace = sys.argv[4]  # one whose layout forces page moves, for --blocks

with tempfile.TemporaryDirectory() as tmp:
    log = os.path.join(tmp, "layout.log")
    out = subprocess.run([nofrag, "replay", "--json", "--capacity-factor", "1.02", "--layout-log", log, trace],
                         check=True, capture_output=True, text=True).stdout
    d = json.loads(out)
    lines = open(log).read().splitlines()
    head = lines[0].split()
    fields = dict(zip(head[4::2], head[5::2]))
    check(head[:4] == ["#", "nofrag", "layout", "log:"], "header line")
    check(int(fields["page_bytes"]) == d["page_bytes"], "page size as replayed")
    check(int(fields["capacity_pages"]) * d["page_bytes"] == d["capacity_bytes"], "cap as replayed")
    base = int(fields["base"])
    starts, ends, sizes = [], [], {}
    allocs = frees = marks = overlaps = unknown = below = 0
    for line in lines[1:]:
        p = line.split()
        if p[0] == "A":
            addr, size = int(p[1]), int(p[2])
            below += addr < base or size % 512 != 0
            i = bisect.bisect_left(starts, addr)
            if (i > 0 and ends[i - 1] > addr) or (i < len(starts) and starts[i] < addr + size):
                overlaps += 1
            starts.insert(i, addr)
            ends.insert(i, addr + size)
            sizes[addr] = size
            allocs += 1
        elif p[0] == "F":
            addr = int(p[1])
            if addr not in sizes:
                unknown += 1
                continue
            i = bisect.bisect_left(starts, addr)
            del starts[i], ends[i]
            del sizes[addr]
            frees += 1
        elif p[0] == "S":
            marks += 1
    check(below == 0, f"placements lie above the base, in multiples of the alignment ({below} do not)")
    check(overlaps == 0, f"live blocks never overlap ({overlaps} overlaps)")
    check(unknown == 0, f"every free names a live block ({unknown} do not)")
    check(marks == d["steps"], f"one step mark per step ({marks} vs {d['steps']})")
    check(allocs > 0 and allocs - frees == len(sizes), "placements less frees are the live blocks")

    res = subprocess.run([sys.executable, oracle, log], capture_output=True, text=True)
    check(res.returncode == 0 and "page moves a step after step 3" in res.stdout, "the oracle reads the log")

    # --blocks: the allocations listed add up to the moves after the warm-up, which are the
    # per-step average times the steps after step 3.
    moving = os.path.join(tmp, "moving.log")
    d = json.loads(subprocess.run([nofrag, "replay", "--json", "--capacity-factor", "1.02", "--layout-log", moving,
                                   moving_trace], check=True, capture_output=True, text=True).stdout)
    res = subprocess.run([sys.executable, oracle, moving, "--blocks"], capture_output=True, text=True)
    out = res.stdout.splitlines()
    listed = sum(int(line.rsplit(":", 1)[1].split()[0]) for line in out if line.startswith("  step "))
    summary = [line for line in out if line.startswith("after step 3: ")]
    check(res.returncode == 0 and len(summary) == 1, "--blocks prints its summary")
    total = int(summary[0].split()[3]) if summary else -1
    per_step = float(out[0].split(": ")[-1].split()[0]) if out else -1
    check(total > 0 and listed == total, f"the listed allocations' moves add up to the summary's ({listed} vs {total})")
    check(abs(total / max(1, d["steps"] - 3) - per_step) < 0.051,
          f"the summary's moves are the per-step average's ({total} over {d['steps'] - 3} steps vs {per_step})")

    nocap = os.path.join(tmp, "nocap.log")
    subprocess.run([nofrag, "replay", "--json", "--layout-log", nocap, trace], check=True, capture_output=True)
    res = subprocess.run([sys.executable, oracle, nocap], capture_output=True, text=True)
    check(res.returncode != 0 and "no cap" in res.stderr, "the oracle refuses a replay without a cap")

    two = subprocess.run([nofrag, "replay", "--layout-log", log, trace, trace], capture_output=True, text=True)
    check(two.returncode == 2 and "one trace" in two.stderr, "--layout-log with two traces is refused")
    bad = subprocess.run([nofrag, "replay", "--layout-log", os.path.join(tmp, "no", "such", "dir"), trace],
                         capture_output=True, text=True)
    check(bad.returncode == 1 and "cannot write" in bad.stderr, "an unwritable log is reported")

finish()
