"""Replay throughput of two nofrag builds side by side: each trace replayed ROUNDS times by each
binary, alternating, median events per second compared.

usage: python3 bench/compare_replay_speed.py BASE_NOFRAG NEW_NOFRAG [ROUNDS] [-- replay options]
"""
import json
import statistics
import subprocess
import sys
from pathlib import Path

args = sys.argv[1:]
extra = args[args.index("--") + 1:] if "--" in args else []
args = args[:args.index("--")] if "--" in args else args
base, new = args[0], args[1]
rounds = int(args[2]) if len(args) > 2 else 7
traces = sorted(str(p) for p in Path(__file__).resolve().parent.parent.glob("traces/*.csv.gz"))
speeds = {b: {} for b in (base, new)}
for _ in range(rounds):
    for binary in (base, new):
        out = subprocess.run([binary, "replay", "--json", *extra, *traces], capture_output=True, text=True, check=True)
        for line in out.stdout.splitlines():
            row = json.loads(line)
            speeds[binary].setdefault(row["trace"], []).append(row["events_per_second"])
print(f"{'trace':18s} {'base Mev/s':>10s} {'new Mev/s':>10s} {'new/base':>9s}")
for name in speeds[base]:
    b, n = statistics.median(speeds[base][name]), statistics.median(speeds[new][name])
    print(f"{name:18s} {b / 1e6:10.2f} {n / 1e6:10.2f} {n / b:9.2f}")
