"""The Python twin of tests/check.h for the command-line tests: check() counts, finish() prints
"N passed, N failed" and exits non-zero on any failure."""
import json
import os
import subprocess
import sys

passed = failed = 0


def check(cond, what):
    global passed, failed
    if cond:
        passed += 1
    else:
        failed += 1
        print("FAILED:", what)


def finish():
    print(f"{passed} passed, {failed} failed")
    sys.exit(1 if failed else 0)


def write_stepped_trace(directory, name, step_sizes):
    """An RMM CSV log with its .steps sidecar: one block a step, allocated and freed; step k's
    block has step_sizes[k] bytes. Returns the CSV's path."""
    path = os.path.join(directory, name + ".csv")
    rows, starts = [], []
    for k, size in enumerate(step_sizes):
        starts.append(len(rows))
        ptr = hex(0x10000000 + k * 0x4000000)
        rows.append(f"1,09:00:00.{2 * k + 1:06d},allocate,{ptr},{size},0")
        rows.append(f"1,09:00:00.{2 * k + 2:06d},free,{ptr},{size},0")
    with open(path, "w") as f:
        f.write("Thread,Time,Action,Pointer,Size,Stream\n" + "\n".join(rows) + "\n")
    with open(os.path.join(directory, name + ".steps"), "w") as f:
        f.write("\n".join(map(str, starts)) + "\n")
    return path


def write_three_block_steps(directory, name, first_sizes, swapped=()):
    """An RMM CSV log with its .steps sidecar for the planners' tests (step_plan.py, role_plan.py):
    one 1 MiB block alive throughout, then a step per entry: A (first_sizes[k]) and B (4 MiB)
    allocated, A freed, C (4 MiB) allocated, B and C freed (C first in the steps listed in
    `swapped`). With A about 2 MiB the live peak is 1 + 4 + 4 MiB; placed in arrival order C would
    not fit where A was (a footprint of 10 MiB for the step's blocks, not 8), while planned biggest
    first B and C sit side by side and A on C's place. Returns the CSV's path."""
    mib = 1 << 20
    rows, starts = [], []
    t = [0]

    def row(action, ptr, size):
        t[0] += 1
        rows.append(f"1,09:00:{t[0] // 1000000:02d}.{t[0] % 1000000:06d},{action},{hex(ptr)},{size},0")
    row("allocate", 0x1000, mib)
    for k, a in enumerate(first_sizes):
        starts.append(len(rows))
        base = 0x10000000 + k * 0x10000000
        row("allocate", base, a)
        row("allocate", base + 0x1000000, 4 * mib)
        row("free", base, a)
        row("allocate", base + 0x2000000, 4 * mib)
        last = [base + 0x1000000, base + 0x2000000]
        for ptr in (reversed(last) if k in swapped else last):
            row("free", ptr, 4 * mib)
    path = os.path.join(directory, name + ".csv")
    with open(path, "w") as f:
        f.write("Thread,Time,Action,Pointer,Size,Stream\n" + "\n".join(rows) + "\n")
    with open(os.path.join(directory, name + ".steps"), "w") as f:
        f.write("\n".join(map(str, starts)) + "\n")
    return path


def replay_json(nofrag, path, *options):
    """`nofrag replay --json OPTIONS PATH`: the trace's object (raises if the replay fails)."""
    out = subprocess.run([nofrag, "replay", "--json", *options, path], check=True, capture_output=True,
                         text=True).stdout
    return json.loads(out.splitlines()[0])
