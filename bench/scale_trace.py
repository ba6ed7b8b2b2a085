"""Writes a copy of a trace with every allocation's size multiplied by a factor: the same job's
pattern of blocks at another scale (a smaller model or batch), to see how the figures depend on
the job's size. The 2 MiB page stays what it is, so the smaller the job, the larger the share of
partly used pages (docs/placement.md, "Smaller and larger jobs").

usage: python3 bench/scale_trace.py TRACE FACTOR OUT.csv[.gz]

Reads the same files as `nofrag replay` (RMM CSV, gzip or plain); copies the NAME.steps sidecar
beside the output when the input has one. Sizes are rounded down, and are at least 1 byte.
"""
import gzip
import os
import shutil
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from call_floor import HEADER, open_trace, steps_path  # noqa: E402


def main():
    if len(sys.argv) != 4:
        raise SystemExit(__doc__.split("\n\n")[2])
    src, out = sys.argv[1], sys.argv[3]
    try:
        factor = float(sys.argv[2])
    except ValueError:
        factor = 0
    if not factor > 0:
        raise SystemExit(f"FACTOR must be a positive number, not {sys.argv[2]!r}")
    with open_trace(src) as f, (gzip.open(out, "wt") if out.endswith(".gz") else open(out, "w")) as g:
        header = f.readline().strip()
        if header != HEADER:
            raise SystemExit(f"{src}: not an RMM CSV log (header {header!r})")
        g.write(HEADER + "\n")
        for line_no, line in enumerate(f, 2):
            fields = line.rstrip("\n").split(",")
            if len(fields) != 6 or not fields[4].isdigit():
                raise SystemExit(f"{src}:{line_no}: not a trace row: {line.strip()!r}")
            fields[4] = str(max(1, int(int(fields[4]) * factor)))
            g.write(",".join(fields) + "\n")
    if os.path.exists(steps_path(src)):
        shutil.copyfile(steps_path(src), steps_path(out))


if __name__ == "__main__":
    main()
