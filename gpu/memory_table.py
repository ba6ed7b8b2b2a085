"""Prints the memory and stream figures that the loss scripts stored (gpt2_losses.py,
model_losses.py, ddp_losses.py), one line per run and rank: held / live peak, page moves, host
waits (event syncs) and device-side waits (stream waits), and time (with the part of a timed
step spent in nofrag's driver calls, where ddp_losses.py stored it).

usage: python3 gpu/memory_table.py LABEL=RUN.json ...
"""
import json
import sys


def rows(label, path):
    run = json.load(open(path))
    per_rank = run["stats"] if isinstance(run["stats"], list) else [run["stats"]]
    for rank, st in enumerate(per_rank):
        live, held = st.get("allocated_bytes.all.peak", 0), st.get("reserved_bytes.all.peak", 0)
        seconds = st.get("seconds_per_step")
        median = st.get("median_step_seconds")
        if seconds is not None:
            time_text = f"{seconds * 1000:7.1f} ms/step"
            driver_ns = st.get("backend_ns_per_timed_step")  # ddp_losses.py, nofrag runs
            if driver_ns is not None:
                time_text += f" (nofrag's driver calls {driver_ns / 1e6:.2f} ms of it)"
        else:
            time_text = f"{run.get('seconds', 0):7.2f} s" + (f", median step {median * 1000:.1f} ms" if median else "")
        yield (f"{label:28s} rank {rank}  live peak {live / 2**30:7.3f} GiB  held {held / max(live, 1):6.3f}x"
               f"  moves {st.get('num_remaps', '-'):>6}  host waits {st.get('calls_event_sync', '-'):>6}"
               f"  device waits {st.get('calls_stream_wait', '-'):>6}  {time_text}")


if __name__ == "__main__":
    if len(sys.argv) < 2:
        raise SystemExit(__doc__)
    for arg in sys.argv[1:]:
        label, _, path = arg.rpartition("=")
        for line in rows(label or path, path):
            print(line)
