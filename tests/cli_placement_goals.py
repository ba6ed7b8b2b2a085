#!/usr/bin/env python3
"""bench/placement_goals.py on small stepped traces written here and on a bundled one: its figures
must be the replay's own (without a cap and at 1.02x), its floor call_floor.py's, each goal's
verdict must follow from them, the summary must count the verdicts, and bad input must be
refused."""
import itertools
import json
import os
import subprocess
import sys
import tempfile

from checks import check, finish, replay_json, write_stepped_trace

nofrag, script, bundled = sys.argv[1], sys.argv[2], sys.argv[3]
floor_script = os.path.join(os.path.dirname(script), "call_floor.py")
MIB = 1 << 20


def run(*args):
    return subprocess.run([sys.executable, script, "--nofrag", nofrag, *args], capture_output=True, text=True)


def replay(path, *extra):
    return replay_json(nofrag, path, *extra)


with tempfile.TemporaryDirectory() as d:
    # flat: the live peak is reached in step 0, so nothing is created after step 3 (0 calls, floor
    # 0). rising: the peak doubles in step 3, so every policy makes calls after it (floor 10/3).
    flat = write_stepped_trace(d, "flat", [20 * MIB] * 3 + [10 * MIB] * 3)
    rising = write_stepped_trace(d, "rising", [10 * MIB] * 3 + [20 * MIB] * 3)
    res = run("--json", flat, rising, bundled)
    check(res.returncode == 0, f"placement_goals.py ran: {res.stderr.strip()}")
    rows = [json.loads(line) for line in res.stdout.splitlines()]
    check(len(rows) == 3, "one line a trace")
    for row, path in zip(rows, (flat, rising, bundled)):
        free, capped = replay(path), replay(path, "--capacity-factor", "1.02")
        name = row["trace"]
        check(row["calls_per_step"] == free["driver_calls_per_step"], f"{name}: calls a step are the replay's")
        check(abs(row["held_over_live"] - free["peak_mapped_bytes"] / free["peak_live_bytes"]) < 1e-9,
              f"{name}: held / live is the replay's")
        check(row["moves_per_step_at_cap"] == capped["remaps_per_step"] and row["failed_at_cap"] == capped["failed_allocs"],
              f"{name}: moves and failures at 1.02x are the replay's")
        check(abs(row["moves_per_step_per_gib"] - capped["remaps_per_step"] * (1 << 30) / capped["peak_live_bytes"]) < 1e-9,
              f"{name}: moves per GiB of live peak")
        check(abs(row["driver_ms_per_step_at_cap"] - capped["est_driver_us_per_step"] / 1000) < 1e-9,
              f"{name}: driver time a step at 1.02x is the replay's estimate")
        check(row["driver_share_of_step_at_cap"] == capped["driver_share_of_step"],
              f"{name}: the driver time's share of the recorded step is the replay's")
        floor = json.loads(subprocess.run([sys.executable, floor_script, "--nofrag", "", "--json", path],
                                          capture_output=True, text=True, check=True).stdout)
        check(abs(row["floor_calls_per_step"] - floor["floor_calls_per_step"]) < 0.001, f"{name}: floor is call_floor.py's")
        # The steady moves: the window's steps (slot k + 1 is step k; the window starts at step 3)
        # that leave the replay's live peak so far where the step before left it.
        per_step = replay(path, "--capacity-factor", "1.02", "--per-step")
        peaks = list(itertools.accumulate(per_step["step_live_peak"], max))
        window = range(4, len(peaks))
        flat_steps = [k for k in window if peaks[k] == peaks[k - 1]]
        check(row["rising_steps"] == len(window) - len(flat_steps), f"{name}: rising steps counted")
        expected = (sum(per_step["step_remaps"][k] for k in flat_steps) / len(flat_steps)) if flat_steps else None
        check(row["steady_moves_per_step_at_cap"] == expected,
              f"{name}: steady moves are the replay's over the steps that keep the live peak "
              f"({row['steady_moves_per_step_at_cap']} against {expected})")
        check(abs(sum(per_step["step_remaps"][4:]) / len(window) - capped["remaps_per_step"]) < 0.001,
              f"{name}: the window is the replay's")
        met = row["met"]
        check(met == {"fail": row["failed_at_cap"] == 0, "moves": row["moves_per_step_at_cap"] <= 10,
                      "held": row["held_over_live"] <= 1.03, "calls": row["calls_per_step"] < 1},
              f"{name}: verdicts follow from the figures ({met})")
    if len(rows) == 3:
        check(rows[0]["rising_steps"] == 0 and rows[1]["rising_steps"] == 1,
              f"flat raises the live peak in no step after step 2, rising in one "
              f"({rows[0]['rising_steps']}, {rows[1]['rising_steps']})")
        check(rows[0]["met"]["calls"] and rows[0]["floor_calls_per_step"] == 0, "flat: no call after step 3")
        check(not rows[1]["met"]["calls"] and rows[1]["floor_calls_per_step"] >= 1,
              f"rising: calls after step 3, out of any policy's reach ({rows[1]['floor_calls_per_step']})")
    # A rise in step 2 comes before the window (steps 3 on): no rising step counted.
    early = write_stepped_trace(d, "early", [10 * MIB] * 2 + [20 * MIB] * 4)
    res = run("--json", early)
    row = json.loads(res.stdout) if res.returncode == 0 else {}
    check(row.get("rising_steps") == 0 and row.get("steady_moves_per_step_at_cap") == 0,
          f"early: the rise in step 2 is warm-up ({row})")
    # The replay's live peak so far at each step's end: nothing before the first step, then the
    # 10 MiB blocks, then the 20 MiB ones from step 3.
    peaks = replay(rising, "--per-step")["step_live_peak"]
    check(peaks == [0] + [10 * MIB] * 3 + [20 * MIB] * 3, f"rising: step_live_peak {peaks}")
    # The table's summary counts the verdicts.
    text = run(flat, rising).stdout
    check("fewer than 1 call a step without a cap: 1 of 2" in text, "summary: calls met on 1 of 2")
    check("no failed allocation at 1.02x: 2 of 2" in text, "summary: no failure on 2 of 2")
    check("of the calls misses, 1 have a floor" in text, "summary: the rising trace's miss is out of reach")
    top = max((replay(p, "--capacity-factor", "1.02")["driver_share_of_step"], os.path.basename(p).split(".")[0])
              for p in (flat, rising))
    check(f"as a share of the recorded step: at most {100 * top[0]:.2f}% ({top[1]})" in text,
          f"summary: the largest driver share ({text.splitlines()[-2]})")
    # Bad input: a missing trace, a missing binary.
    res = run(os.path.join(d, "missing.csv"))
    check(res.returncode == 2 and "no such trace" in res.stderr, "a missing trace is refused")
    res = subprocess.run([sys.executable, script, "--nofrag", os.path.join(d, "none"), flat], capture_output=True, text=True)
    check(res.returncode == 2 and "no nofrag binary" in res.stderr, "a missing binary is refused")
finish()
