#!/usr/bin/env python3
"""bench/host_waits.py: its figures are the replay's own, for each lag and mode, and bad input is
refused."""
import json
import subprocess
import sys

from checks import check, finish, replay_json

nofrag, script, trace = sys.argv[1], sys.argv[2], sys.argv[3]


def run(*args):
    return subprocess.run([sys.executable, script, "--nofrag", nofrag, *args], capture_output=True, text=True)


res = run("--json", "--lags", "0,2048", trace)
check(res.returncode == 0, f"host_waits.py ran: {res.stderr.strip()}")
rows = [json.loads(line) for line in res.stdout.splitlines()]
check(len(rows) == 4, "two lags x two modes")
modes = {"1.02x": ["--capacity-factor", "1.02"], "no budget": ["--capacity", "139G", "--hold-near-live"]}
for row in rows:
    r = replay_json(nofrag, trace, *modes[row["mode"]], "--stream-lag", str(row["lag"]))
    c = r["calls_per_step"]
    check(row["host_waits_per_step"] == c["event_sync"] and row["event_records_per_step"] == c["event_record"]
          and row["event_queries_per_step"] == c["event_query"] and row["moves_per_step"] == r["remaps_per_step"],
          f"{row['mode']}, lag {row['lag']}: the replay's figures")
lag0 = [row for row in rows if row["lag"] == 0]
check(all(row["host_waits_per_step"] == 0 for row in lag0), "no host wait when the device keeps up")
check(any(row["host_waits_per_step"] > 0 for row in rows if row["lag"] == 2048),
      "a device 2,048 events behind makes the host wait")
check(run("--lags", "x", trace).returncode == 2, "bad --lags refused")
check(run("--lags", "-5", trace).returncode == 2, "negative lag refused")
check(run("/nonexistent.csv").returncode == 2, "missing trace refused")
finish()
