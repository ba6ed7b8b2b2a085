"""Converts a PyTorch memory-history trace (action,addr,size,stream,time_us CSV, with a marks.json
of step start times) to the RMM CSV log nofrag replays, plus its .steps sidecar.

usage: python3 convert_trace.py NAME.trace.csv.gz NAME.marks.json OUT_DIR
A block is live from `alloc` to `free_completed` (the moment PyTorch could reuse it); traces without
free_completed rows use free_requested.
"""
import csv
import datetime
import gzip
import json
import os
import sys

src, marks_path, out_dir = sys.argv[1:4]
name = os.path.basename(src).split(".")[0]
rows = list(csv.DictReader(gzip.open(src, "rt")))
free_action = "free_completed" if any(r["action"] == "free_completed" for r in rows) else "free_requested"
marks = [t for _, t in json.load(open(marks_path))]
live = {}
out_rows, steps, mark_i = [], [], 0
for r in rows:
    action = r["action"]
    if action not in ("alloc", free_action):
        continue
    t = int(r["time_us"])
    while mark_i < len(marks) and marks[mark_i] <= t:
        steps.append(len(out_rows))
        mark_i += 1
    addr, size, stream = int(r["addr"]), int(r["size"]), int(r["stream"])
    if action == "alloc":
        live[addr] = size
        kind = "allocate"
    else:
        if addr not in live:
            continue  # freed block allocated before recording began
        size = live.pop(addr)
        kind = "free"
    stamp = datetime.datetime.fromtimestamp(t / 1e6).strftime("%H:%M:%S.%f")
    out_rows.append(f"1,{stamp},{kind},0x{addr:x},{size},{stream:x}\n")
os.makedirs(out_dir, exist_ok=True)
with gzip.open(os.path.join(out_dir, f"{name}.csv.gz"), "wt") as f:
    f.write("Thread,Time,Action,Pointer,Size,Stream\n")
    f.writelines(out_rows)
with open(os.path.join(out_dir, f"{name}.steps"), "w") as f:
    f.write("# row index (0-based, data rows after the header) of the first event of each training step\n")
    f.writelines(f"{s}\n" for s in sorted(set(steps)))
print(name, len(out_rows), "events,", len(set(steps)), "steps,", len(live), "blocks live at the end")
