"""nofrag: a GPU memory allocator that keeps physical memory held close to the bytes live.

The PyTorch front end is nofrag.torch; enable it before CUDA is initialised:

    import nofrag.torch
    nofrag.torch.enable()          # or enable(capacity="40G"), or NOFRAG_* environment variables

These functions work once nofrag serves PyTorch's allocations. `device` is a CUDA device index;
None means every device nofrag has a pool on (stats: the current device).
"""
import contextlib
import json
import sys

from ._lib import NofragError, Phase, check, lib, parse_bytes

__all__ = ["stats", "reset_peak_stats", "torch_memory_stats", "reset_accumulated_stats", "step", "trim", "phase",
           "StepMarks", "hf_callback", "check_pools", "last_error", "version", "NofragError", "parse_bytes"]

# nofrag stats whose meaning matches a key of torch.cuda.memory_stats(): they are reported under
# PyTorch's name as well, so code written against memory_stats can read them.
_TORCH_NAMES = {
    "allocated_bytes": "allocated_bytes.all",
    "reserved_bytes": "reserved_bytes.all",
    "allocation": "allocation.all",
    "num_alloc_failures": "num_ooms",
}


def version():
    return lib().nf_version().decode()


def _device(device):
    """A device index from None (the current device), an index, "cuda:N" or a torch.device."""
    if isinstance(device, int):
        return device
    if isinstance(device, str):
        import torch
        device = torch.device(device)
    index = getattr(device, "index", device)
    if index is None:
        import torch
        return torch.cuda.current_device()
    return int(index)


def stats(device=None):
    """The pool's statistics as a dict: every nofrag figure under its own name, and those that mean
    what a torch.cuda.memory_stats() key means also under that key ("allocated_bytes.all.peak",
    "reserved_bytes.all.current", "num_ooms", ...). Empty when the device has no pool yet."""
    dev = _device(device)
    L = lib()
    if not L.nf_torch_pool_exists(dev):
        return {}
    import ctypes
    buf = ctypes.create_string_buffer(16384)
    check(L.nf_torch_stats_json(dev, buf, len(buf)), "nofrag.stats")
    out = json.loads(buf.value.decode())
    # CUDA graphs' private pools (held apart from the device pool while their graphs live).
    check(L.nf_torch_graph_pools(dev, buf, len(buf)), "nofrag.stats")
    out.update(json.loads(buf.value.decode()))
    for key, value in list(out.items()):
        base, _, part = key.partition(".")
        if base in _TORCH_NAMES:
            out[_TORCH_NAMES[base] + ("." + part if part else "")] = value
    return out


def reset_peak_stats(device=-1):
    """Sets every peak in stats() to its current value, to measure a phase's peak (what
    torch.cuda.reset_peak_memory_stats does under nofrag). Statistics only: how the pool places
    blocks and grows does not change."""
    check(lib().nf_torch_reset_peaks(-1 if device is None else device), "nofrag.reset_peak_stats")


# torch.cuda.memory_stats() under nofrag: PyTorch's nested layout, each figure from the nofrag
# gauge or counter that means the same. PyTorch's caching allocator has two pools (small and
# large blocks) where nofrag has one: "large_pool" repeats "all", "small_pool" is zero. A
# "segment" is a physical page (one driver allocation). Figures nofrag does not track (inactive
# splits, oversize blocks, retries, whole-device syncs) are 0, max_split_size -1 (no limit).
_GAUGE_OF = {
    "allocated_bytes": "allocated_bytes", "active_bytes": "allocated_bytes",
    "requested_bytes": "allocated_bytes", "reserved_bytes": "reserved_bytes",
    "allocation": "allocation", "active": "allocation", "segment": "reserved_bytes",
    "inactive_split": None, "inactive_split_bytes": None,
}
_ACCUMULATED = ("allocated", "freed")
_COUNTERS = {"num_ooms": "num_alloc_failures", "num_device_alloc": "calls_page_create",
             "num_device_free": "calls_page_release", "num_alloc_retries": None,
             "num_sync_all_streams": None}
_accumulated_base = {}  # device -> the accumulated figures at the last reset_accumulated_stats


_GRAPH_PART = {"allocated_bytes": "graph_allocated_bytes", "reserved_bytes": "graph_reserved_bytes"}


def _torch_layout(nf, base=None):
    """PyTorch's nested memory_stats from nofrag's stats() dict `nf` (empty: no pool yet, all 0);
    `base`, a previous result, is subtracted from the accumulated figures (allocated, freed and
    the counters), as torch.cuda.reset_accumulated_memory_stats asks."""
    page = nf.get("granularity_bytes") or 1
    out = {}
    for key, gauge in _GAUGE_OF.items():
        cur = nf.get(gauge + ".current", 0) if gauge else 0
        peak = nf.get(gauge + ".peak", 0) if gauge else 0
        total = nf.get(gauge + ".total", 0) if gauge else 0
        if key == "segment":
            cur, peak, total = cur // page, peak // page, total // page
        # CUDA graphs' pools count in PyTorch's figures as its private pools do: their current
        # bytes, also in the total so that allocated - freed stays the current (nofrag keeps no
        # joint peak or history for them, so the peak is at least the current).
        graph = nf.get(_GRAPH_PART.get(key, ""), 0)
        cur, peak, total = cur + graph, max(peak, cur + graph), total + graph
        stat = {"current": cur, "peak": peak, "allocated": total, "freed": total - cur}
        if base:
            for k in _ACCUMULATED:
                stat[k] -= base[key]["all"][k]
        out[key] = {"all": stat, "large_pool": dict(stat), "small_pool": dict.fromkeys(stat, 0)}
    for key in ("oversize_allocations", "oversize_segments"):
        out[key] = {"current": 0, "peak": 0, "allocated": 0, "freed": 0}
    for key, counter in _COUNTERS.items():
        out[key] = (nf.get(counter, 0) if counter else 0) - (base[key] if base else 0)
    out["max_split_size"] = -1
    return out


def torch_memory_stats(device=None):
    """The pool's figures in the layout of PyTorch's torch.cuda.memory_stats_as_nested_dict (flat
    names like "allocated_bytes.all.peak" through torch.cuda.memory_stats). nofrag.torch.enable()
    makes torch.cuda.memory_stats(), memory_allocated(), max_memory_reserved(), memory_summary()
    and the like read these."""
    dev = _device(device)
    return _torch_layout(stats(dev), _accumulated_base.get(dev))


def reset_accumulated_stats(device=None):
    """Restarts the accumulated figures of torch_memory_stats (allocated, freed, num_ooms, ...)
    from zero, as torch.cuda.reset_accumulated_memory_stats does; stats() keeps its totals."""
    dev = _device(device)
    _accumulated_base[dev] = _torch_layout(stats(dev))


def step(device=-1):
    """Marks a training step boundary (counted in num_steps, for per-step figures)."""
    lib().nf_torch_step(-1 if device is None else device)


def trim(keep_bytes=0, device=-1):
    """Gives idle physical memory back to the driver, keeping at most keep_bytes per pool, and
    destroys the pools of deleted CUDA graphs (after waiting for the device: their last replays
    may still run)."""
    _synchronize()
    check(lib().nf_torch_trim(-1 if device is None else device, parse_bytes(keep_bytes)), "nofrag.trim")


def _synchronize():
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_initialized():
        torch.cuda.synchronize()


def _marks_now(device=None):
    """{device: where its pool stands now (nf_phase_mark)} for `device`, or for every device that has
    a pool when None."""
    import ctypes
    L = lib()
    if device is not None:
        devices = [_device(device)]
    else:
        mask = L.nf_torch_pool_devices()
        devices = [d for d in range(mask.bit_length()) if mask >> d & 1]
    marks = {}
    for d in devices:
        mark = Phase()
        if L.nf_torch_phase_mark(d, ctypes.byref(mark)) == 0:
            marks[d] = mark
    return marks


def _return_to(marks, what):
    """Waits for the device, then returns each pool to its mark (nf_phase_return); {device: bytes
    given back}."""
    import ctypes
    _synchronize()
    released = {}
    for d, mark in marks.items():
        out = ctypes.c_uint64(0)
        check(lib().nf_torch_phase_return(d, ctypes.byref(mark), ctypes.byref(out)), what)
        released[d] = out.value
    return released


@contextlib.contextmanager
def phase(device=None):
    """A phase whose live peak may pass the training steps' (evaluation, a checkpoint save, a
    generation pass): memory the pools hold on leaving it beyond what they held on entering is
    given back, idle memory only, and they grow again as before it rather than up to the phase's
    peak. `device`: an index, or None for every device that has a pool on entering. The phase's
    work is waited for on leaving (torch.cuda.synchronize). Yields a dict that, once the phase is
    over, maps each device to the bytes given back.

        with nofrag.phase():
            evaluate(model)
    """
    marks = _marks_now(device)
    released = {}
    try:
        yield released
    finally:
        released.update(_return_to(marks, "nofrag.phase"))


class StepMarks:
    """Training-loop hooks for loops whose phases are not one block of code (a trainer's callbacks):
    step_end() marks a step boundary (nofrag.step()) and where the pools stand; settle(), after an
    evaluation or a checkpoint save, returns them to the last step's mark as leaving
    nofrag.phase() would. settle() before any step_end() does nothing."""

    def __init__(self):
        self._marks = {}

    def step_end(self):
        step()
        self._marks = _marks_now()

    def settle(self):
        """{device: bytes given back}."""
        return _return_to(self._marks, "nofrag.StepMarks.settle") if self._marks else {}


def hf_callback():
    """A transformers TrainerCallback doing StepMarks' work: a step mark at every optimizer step's
    end, and the pools back to the last step's mark after every evaluation and checkpoint save.

        trainer.add_callback(nofrag.hf_callback())
    """
    from transformers import TrainerCallback

    marks = StepMarks()

    class NofragCallback(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            marks.step_end()

        def on_evaluate(self, args, state, control, **kwargs):
            marks.settle()

        def on_save(self, args, state, control, **kwargs):
            marks.settle()

    return NofragCallback()


def check_pools(device=-1):
    """Checks every invariant of the pools; raises NofragError naming the first broken one."""
    check(lib().nf_torch_check(-1 if device is None else device), "nofrag.check_pools")


def last_error():
    """The last message the library logged (an out-of-memory report, a failed driver call)."""
    return lib().nf_torch_last_error().decode(errors="replace")
