"""nofrag: a GPU memory allocator that keeps physical memory held close to the bytes live.

The PyTorch front end is nofrag.torch; enable it before CUDA is initialised:

    import nofrag.torch
    nofrag.torch.enable()          # or enable(capacity="40G"), or NOFRAG_* environment variables

These functions work once nofrag serves PyTorch's allocations. `device` is a CUDA device index;
None means every device nofrag has a pool on (stats: the current device).
"""
import json

from ._lib import NofragError, check, lib, parse_bytes

__all__ = ["stats", "step", "trim", "check_pools", "last_error", "version", "NofragError", "parse_bytes"]

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
    if device is None:
        import torch
        return torch.cuda.current_device()
    return int(getattr(device, "index", device) if not isinstance(device, int) else device)


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
    for key, value in list(out.items()):
        base, _, part = key.partition(".")
        if base in _TORCH_NAMES:
            out[_TORCH_NAMES[base] + ("." + part if part else "")] = value
    return out


def step(device=-1):
    """Marks a training step boundary (counted in num_steps, for per-step figures)."""
    lib().nf_torch_step(-1 if device is None else device)


def trim(keep_bytes=0, device=-1):
    """Gives idle physical memory back to the driver, keeping at most keep_bytes per pool."""
    check(lib().nf_torch_trim(-1 if device is None else device, parse_bytes(keep_bytes)), "nofrag.trim")


def check_pools(device=-1):
    """Checks every invariant of the pools; raises NofragError naming the first broken one."""
    check(lib().nf_torch_check(-1 if device is None else device), "nofrag.check_pools")


def last_error():
    """The last message the library logged (an out-of-memory report, a failed driver call)."""
    return lib().nf_torch_last_error().decode(errors="replace")
