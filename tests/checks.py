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


def replay_json(nofrag, path, *options):
    """`nofrag replay --json OPTIONS PATH`: the trace's object (raises if the replay fails)."""
    out = subprocess.run([nofrag, "replay", "--json", *options, path], check=True, capture_output=True,
                         text=True).stdout
    return json.loads(out.splitlines()[0])
