"""Converts a PyTorch memory-history trace (action,addr,size,stream,time_us CSV, with a marks.json
of step start times) to the RMM CSV log nofrag replays, plus its .steps sidecar: the files the
recording scripts (.rec/workloads.py, gpu/workloads_more.py) write, through nofrag.record.convert,
which a job can also call directly (nofrag.record.Recorder).

usage: python3 convert_trace.py NAME.trace.csv.gz NAME.marks.json OUT_DIR
"""
import csv
import gzip
import json
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "python"))
from nofrag.record import RecordingError, convert  # noqa: E402

src, marks_path, out_dir = sys.argv[1:4]
name = os.path.basename(src).split(".")[0]
with gzip.open(src, "rt") as f:
    events = list(csv.DictReader(f))
marks = [t for _, t in json.load(open(marks_path))]
# The recording scripts' history ring (.rec/workloads.py, gpu/workloads_more.py): a trace that
# filled it lost its first events, the model's weights among them, and is refused.
RECORDING_MAX_ENTRIES = 4_000_000
try:
    summary = convert(events, marks, os.path.join(out_dir, name), RECORDING_MAX_ENTRIES)
except RecordingError as e:
    raise SystemExit(f"{src}: {e}")
print(name, summary["events"], "events,", summary["steps"], "steps,", summary["live_at_end"], "blocks live at the end")
