#!/usr/bin/env python3
"""Writes a NAME.pytorch sidecar beside every bundled trace (traces/ and traces/heldout/) from the
PyTorch figures measured when it was recorded (traces/pytorch_measured.json and
traces/pytorch_measured_recorded.json: PyTorch's default allocator, and expandable segments where
a second run measured them), so that `nofrag replay` prints them beside its own. Recordings made with nofrag.record get theirs from the Recorder.

usage: python3 scripts/pytorch-sidecars.py
"""
import json
import os

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "traces")


def main():
    measured = {}
    for name in ("pytorch_measured.json", "pytorch_measured_recorded.json"):
        measured.update(json.load(open(os.path.join(ROOT, name))))
    written = 0
    for folder in (ROOT, os.path.join(ROOT, "heldout")):
        for entry in sorted(os.listdir(folder)):
            if not entry.endswith(".csv.gz"):
                continue
            trace = entry[: -len(".csv.gz")]
            figures = measured.get(trace, {}).get("pytorch_default")
            if not figures:
                print(f"{trace}: no PyTorch figures measured, no sidecar")
                continue
            with open(os.path.join(folder, trace + ".pytorch"), "w") as f:
                f.write("# PyTorch's own allocator (default settings) on the recorded job, from "
                        "traces/pytorch_measured*.json\n")
                f.write(f"allocated_bytes_peak {figures['allocated_bytes.all.peak']}\n")
                f.write(f"reserved_bytes_peak {figures['reserved_bytes.all.peak']}\n")
                expandable = (measured[trace].get("pytorch_expandable_segments")
                              or measured[trace].get("pytorch_expandable"))
                if expandable:  # a second run of the job with expandable_segments:True
                    f.write(f"expandable_allocated_bytes_peak {expandable['allocated_bytes.all.peak']}\n")
                    f.write(f"expandable_reserved_bytes_peak {expandable['reserved_bytes.all.peak']}\n")
                f.write(f"allocator native\ntorch {measured[trace].get('torch', 'unknown')}\n")
            written += 1
    print(f"{written} sidecars written")


if __name__ == "__main__":
    main()
