"""Recording a PyTorch job's allocations, to replay them with `nofrag replay`: how much memory does
the job really need, and what would nofrag hold and do for it?

    import nofrag.record
    recorder = nofrag.record.Recorder("traces/myjob")   # before the job's first CUDA allocation
    recorder.start()
    for batch in loader:
        recorder.step()                  # at the start of every training step
        ...                              # forward, backward, optimizer step
    recorder.stop()                      # writes traces/myjob.csv.gz, .steps and .pytorch

    # then, no GPU needed:  nofrag replay --min-capacity traces/myjob.csv.gz

`with nofrag.record.Recorder("traces/myjob") as recorder:` starts and stops it around a block.

A memory snapshot saved earlier (torch.cuda.memory._dump_snapshot, the memory visualiser's input)
converts the same way, without steps (its history has no step marks):

    python3 -m nofrag.record SNAPSHOT.pickle traces/myjob [--device N]

It uses PyTorch's memory history (torch.cuda.memory._record_memory_history), so it records what
PyTorch's own caching allocator is asked for: run the job with PyTorch's allocator, not under
nofrag.torch.enable() (a pluggable allocator keeps no history). A block lives from its `alloc` to
its `free_completed`, the moment PyTorch could reuse it (`free_requested` where a PyTorch version
records no completions). The output is RMM's CSV log (Thread,Time,Action,Pointer,Size,Stream) with
a NAME.steps sidecar listing the row where each step starts, and a NAME.pytorch sidecar with
PyTorch's own allocator's peaks in the recording process (what it held for the job; `nofrag
replay` prints its own figures beside them).
"""
import datetime
import gzip
import os
import pickle
import sys
import time
import warnings

__all__ = ["Recorder", "convert", "convert_snapshot", "RecordingError"]

DEFAULT_MAX_ENTRIES = 4_000_000


class RecordingError(RuntimeError):
    """The recording cannot be turned into a trace (nothing recorded, or history lost)."""


def convert(events, step_times_us, out_base, max_entries=None):
    """Writes OUT_BASE.csv.gz and OUT_BASE.steps from PyTorch memory-history events.

    events: dicts with action, addr, size, stream and time_us (microseconds since the epoch), in the
    order PyTorch recorded them; step_times_us: the start time of every step, ascending;
    max_entries: the history ring's size the recording ran with, if known: a recording that filled
    it lost its oldest events (the model's weights among them) and is refused. Returns
    {"events", "steps", "live_at_end", "trace", "steps_file"}. Frees of blocks allocated before the
    recording began are skipped; a block freed twice is an error."""
    events = list(events)
    if max_entries is not None and len(events) >= max_entries:
        raise RecordingError(f"PyTorch's history ring ({max_entries} entries) filled up and lost the "
                             "oldest events: record fewer steps or pass a larger max_entries")
    free_action = "free_completed" if any(e["action"] == "free_completed" for e in events) else "free_requested"
    step_times_us = list(step_times_us)
    if any(b < a for a, b in zip(step_times_us, step_times_us[1:])):
        raise ValueError("step times must be in ascending order")
    live, rows, step_rows, next_step = {}, [], [], 0
    for e in events:
        action = e["action"]
        if action not in ("alloc", free_action):
            continue
        t = int(e["time_us"])
        while next_step < len(step_times_us) and step_times_us[next_step] <= t:
            step_rows.append(len(rows))
            next_step += 1
        addr, stream = int(e["addr"]), int(e["stream"])
        if action == "alloc":
            if addr in live:
                raise RecordingError(f"address 0x{addr:x} allocated twice without a free in between")
            live[addr] = int(e["size"])
            kind, size = "allocate", live[addr]
        elif addr in live:
            kind, size = "free", live.pop(addr)
        else:
            continue  # allocated before the recording began
        stamp = datetime.datetime.fromtimestamp(t / 1e6).strftime("%H:%M:%S.%f")
        rows.append(f"1,{stamp},{kind},0x{addr:x},{size},{stream:x}\n")
    if not rows:
        raise RecordingError("no allocation was recorded (was CUDA memory allocated between start and stop?)")
    directory = os.path.dirname(out_base)
    if directory:
        os.makedirs(directory, exist_ok=True)
    trace_path, steps_path = out_base + ".csv.gz", out_base + ".steps"
    with gzip.open(trace_path, "wt") as f:
        f.write("Thread,Time,Action,Pointer,Size,Stream\n")
        f.writelines(rows)
    step_rows = sorted(set(step_rows))
    if len(step_rows) < len(step_times_us):
        warnings.warn(f"{len(step_times_us)} step marks fell on {len(step_rows)} distinct rows: steps that allocated "
                      "nothing, or marks outside the recorded events' times")
    with open(steps_path, "w") as f:
        f.write("# row index (0-based, data rows after the header) of the first event of each training step\n")
        f.writelines(f"{r}\n" for r in step_rows)
    return {"events": len(rows), "steps": len(step_rows), "live_at_end": len(live), "trace": trace_path,
            "steps_file": steps_path}


def _history_off(torch):
    try:
        torch.cuda.memory._record_memory_history(enabled=None)
    except TypeError:  # older PyTorch
        torch.cuda.memory._record_memory_history(False)


def _write_pytorch_figures(torch, device, out_base):
    """OUT_BASE.pytorch: PyTorch's own allocator's peaks in this process (the allocator the job was
    recorded under), which `nofrag replay` prints beside its own figures. Returns the path, or
    None when PyTorch does not say (the file is then not written)."""
    try:
        allocated = int(torch.cuda.max_memory_allocated(device))
        reserved = int(torch.cuda.max_memory_reserved(device))
    except (AttributeError, RuntimeError, TypeError, ValueError):
        return None
    if allocated <= 0 or reserved <= 0:
        return None
    conf = os.environ.get("PYTORCH_CUDA_ALLOC_CONF", "")
    path = out_base + ".pytorch"
    with open(path, "w") as f:
        f.write("# PyTorch's own allocator while this trace was recorded: its peaks in the recording\n"
                "# process (torch.cuda.max_memory_allocated / max_memory_reserved), read by nofrag replay\n")
        f.write(f"allocated_bytes_peak {allocated}\nreserved_bytes_peak {reserved}\n")
        f.write(f"allocator {'expandable_segments' if 'expandable_segments:True' in conf else 'native'}\n")
        f.write(f"torch {getattr(torch, '__version__', 'unknown')}\n")
    return path


class Recorder:
    """Records one device's allocations between start() and stop(); step() marks step starts.

    out_base: path without extension (".csv.gz" and ".steps" are added). device: CUDA device index
    (default: the current device at stop()). max_entries: the size of PyTorch's history ring; a
    recording that fills it has lost its oldest events, and stop() refuses it."""

    def __init__(self, out_base, device=None, max_entries=DEFAULT_MAX_ENTRIES):
        if not out_base or out_base.endswith(".csv.gz"):
            raise ValueError("out_base is a path without extension, such as 'traces/myjob'")
        if max_entries < 1:
            raise ValueError("max_entries must be positive")
        self.out_base, self.device, self.max_entries = out_base, device, max_entries
        self.step_times_us = []
        self.running = False
        self.summary = None

    def start(self):
        import torch
        if self.running:
            raise RecordingError("the recorder is already running")
        try:
            torch.cuda.memory._record_memory_history(enabled="all", context=None, stacks="python",
                                                     max_entries=self.max_entries)
        except TypeError:  # older PyTorch: no keyword for what to record
            torch.cuda.memory._record_memory_history(True, trace_alloc_max_entries=self.max_entries)
        self.step_times_us = []
        self.running = True
        return self

    def step(self):
        """Marks the start of a training step (call it before the step's first allocation)."""
        if not self.running:
            raise RecordingError("step() before start()")
        self.step_times_us.append(time.time_ns() // 1000)

    def stop(self):
        """Stops recording and writes the trace; returns convert()'s summary."""
        import torch
        if not self.running:
            raise RecordingError("stop() before start()")
        self.running = False
        torch.cuda.synchronize()
        snapshot = torch.cuda.memory._snapshot()
        _history_off(torch)
        device = torch.cuda.current_device() if self.device is None else self.device
        traces = snapshot.get("device_traces", [])
        events = traces[device] if device < len(traces) else []
        if not self.step_times_us:
            warnings.warn("no step() was marked: the trace has no steps, so per-step figures are not available")
        self.summary = convert(events, self.step_times_us, self.out_base, self.max_entries)
        self.summary["pytorch_file"] = _write_pytorch_figures(torch, device, self.out_base)
        return self.summary

    def __enter__(self):
        return self.start()

    def __exit__(self, exc_type, exc, tb):
        if exc_type is None:
            self.stop()
        elif self.running:  # the job failed: stop recording, write nothing
            self.running = False
            import torch
            _history_off(torch)
        return False


class _PlainUnpickler(pickle.Unpickler):
    """A snapshot holds only dicts, lists, strings and numbers; refusing every class keeps loading
    a file from elsewhere from running code (what a plain pickle.load would allow)."""

    def find_class(self, module, name):
        raise RecordingError(f"not a plain memory snapshot: it names {module}.{name}")


def convert_snapshot(path, out_base, device=None):
    """Writes OUT_BASE.csv.gz and OUT_BASE.steps (no steps) from a snapshot PyTorch saved with
    torch.cuda.memory._dump_snapshot while memory history was on. device: the CUDA device whose
    history to take; None: the only one that has any. Returns convert()'s summary."""
    try:
        with open(path, "rb") as f:
            snapshot = _PlainUnpickler(f).load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, IndexError) as e:
        raise RecordingError(f"{path}: not a PyTorch memory snapshot ({e})") from None
    traces = snapshot.get("device_traces") if isinstance(snapshot, dict) else None
    if not isinstance(traces, list):
        raise RecordingError(f"{path}: no device_traces: not a snapshot of memory history "
                             "(was torch.cuda.memory._record_memory_history on?)")
    recorded = [d for d, events in enumerate(traces) if events]
    if device is None:
        if len(recorded) != 1:
            raise RecordingError(f"{path}: history on devices {recorded or 'none'}: name one with --device"
                                 if recorded else f"{path}: the snapshot's history is empty")
        device = recorded[0]
    if not 0 <= device < len(traces) or not traces[device]:
        raise RecordingError(f"{path}: no history for device {device} (devices with history: {recorded})")
    return convert(traces[device], [], out_base)


def main(argv):
    import argparse
    ap = argparse.ArgumentParser(prog="python3 -m nofrag.record",
                                 description="Converts a PyTorch memory snapshot (torch.cuda.memory."
                                             "_dump_snapshot) into a trace for nofrag replay.")
    ap.add_argument("snapshot")
    ap.add_argument("out_base", help="output path without extension: writes OUT_BASE.csv.gz and OUT_BASE.steps")
    ap.add_argument("--device", type=int, help="the CUDA device whose history to take (default: the only one)")
    args = ap.parse_args(argv)
    if args.out_base.endswith(".csv.gz"):
        ap.error("out_base is a path without extension, such as 'traces/myjob'")
    try:
        summary = convert_snapshot(args.snapshot, args.out_base, args.device)
    except (RecordingError, OSError) as e:
        print(f"nofrag.record: {e}", file=sys.stderr)
        return 1
    print(f"wrote {summary['trace']}: {summary['events']} events, live at the end: {summary['live_at_end']} blocks "
          "(no step marks: the replay's figures cover the whole trace)")
    print(f"next: nofrag replay --min-capacity {summary['trace']}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
