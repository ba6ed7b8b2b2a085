#!/usr/bin/env python3
"""nofrag replay's recorded step time and driver share: from the trace's Time column, over the
steps after step 3, across midnight; null without step marks."""
import os
import sys
import tempfile

from checks import check, finish, replay_json

nofrag = sys.argv[1]
MIB = 1 << 20


def write(directory, name, step_seconds, steps_file=True):
    """Six steps, each one block allocated and freed; step k starts step_seconds[k] seconds after
    23:59:55 (so the later steps fall after midnight) and its free comes half a second later."""
    path = os.path.join(directory, name + ".csv")
    rows, starts = [], []
    for k, start in enumerate(step_seconds):
        starts.append(len(rows))
        ptr = hex(0x10000000 + k * 0x4000000)
        for offset, action in ((0.0, "allocate"), (0.5, "free")):
            t = (23 * 3600 + 59 * 60 + 55 + start + offset) % 86400
            stamp = f"{int(t // 3600):02d}:{int(t % 3600 // 60):02d}:{t % 60:09.6f}"
            rows.append(f"1,{stamp},{action},{ptr},{(k + 1) * 4 * MIB},0")
    with open(path, "w") as f:
        f.write("Thread,Time,Action,Pointer,Size,Stream\n" + "\n".join(rows) + "\n")
    if steps_file:
        with open(os.path.join(directory, name + ".steps"), "w") as f:
            f.write("\n".join(map(str, starts)) + "\n")
    return path


with tempfile.TemporaryDirectory() as d:
    # Steps 3, 4 and 5 start at 3, 5 and 9 s (across midnight); the last row is at 9.5 s: the
    # window after step 3 spans 6.5 s over 3 steps.
    stepped = write(d, "stepped", [0, 1, 2, 3, 5, 9])
    for extra in ((), ("--capacity-factor", "1.02")):
        r = replay_json(nofrag, stepped, *extra)
        check(r["steps"] == 6, f"six steps {extra}")
        check(abs(r["recorded_step_ms"] - 6500 / 3) < 0.001, f"recorded step {r['recorded_step_ms']} ms, not 2166.667 {extra}")
        check(abs(r["driver_share_of_step"] - r["est_driver_us_per_step"] / (6500e3 / 3)) < 1e-6,
              f"driver share is the estimate over the recorded step {extra}")
        check(r["driver_share_of_step"] > 0, f"the steps after step 3 make calls: a share above 0 {extra}")
    # Three steps: the window is all of them (0 to 2.5 s).
    short = write(d, "short", [0, 1, 2])
    r = replay_json(nofrag, short)
    check(abs(r["recorded_step_ms"] - 2500 / 3) < 0.001, f"three steps: {r['recorded_step_ms']} ms, not 833.333")
    # No step marks: nothing to divide by.
    unmarked = write(d, "unmarked", [0, 1, 2, 3, 5, 9], steps_file=False)
    r = replay_json(nofrag, unmarked)
    check(r["recorded_step_ms"] is None and r["driver_share_of_step"] is None, "no step marks: null")
finish()
