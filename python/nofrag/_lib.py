"""Finding and loading libnofrag.so with ctypes, and the settings shared by the front ends."""
import ctypes
import os
import re
from pathlib import Path

_LIB = None

_SUFFIXES = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}


def parse_bytes(text):
    """'12G', '512MiB', '1048576' -> bytes. Raises ValueError with the text on anything else, and
    on counts of 2**64 or more, which the library's 64-bit sizes cannot hold (ctypes would wrap
    them silently into a small number)."""
    m = re.fullmatch(r"\s*([0-9]+(?:\.[0-9]+)?)\s*([kKmMgGtT]?)(?:i?[bB])?\s*", str(text))
    if not m:
        raise ValueError(f"not a byte count: {text!r} (examples: 12G, 512MiB, 1048576)")
    number, unit = m.group(1), _SUFFIXES[m.group(2).lower()]
    value = int(number) * unit if "." not in number else int(float(number) * unit)
    if value >= 1 << 64:
        raise ValueError(f"byte count too large: {text!r} (at most 2**64 - 1 bytes)")
    return value


def library_path():
    """Where libnofrag.so is: $NOFRAG_LIBRARY, next to this package, or the source tree's build/."""
    env = os.environ.get("NOFRAG_LIBRARY")
    if env:
        if not Path(env).is_file():
            raise FileNotFoundError(f"NOFRAG_LIBRARY={env} does not exist")
        return str(Path(env).resolve())
    here = Path(__file__).resolve().parent
    for candidate in (here / "libnofrag.so", here.parent.parent / "build" / "libnofrag.so"):
        if candidate.is_file():
            return str(candidate)
    raise FileNotFoundError(
        "libnofrag.so not found: build it (cmake -S . -B build && cmake --build build) "
        "or set NOFRAG_LIBRARY to its path")


class Phase(ctypes.Structure):
    """nf_phase: where a pool stood at nf_phase_mark (include/nofrag.h)."""
    _fields_ = [("held_bytes", ctypes.c_uint64), ("live_peak", ctypes.c_uint64)]


def lib():
    """The loaded library, with argument and result types declared."""
    global _LIB
    if _LIB is None:
        L = ctypes.CDLL(library_path())
        u64, c_int, c_double, vp = ctypes.c_uint64, ctypes.c_int, ctypes.c_double, ctypes.c_void_p
        L.nf_torch_configure.argtypes = [u64, c_double, u64, c_int, c_int, u64, c_int]
        L.nf_torch_configure.restype = c_int
        L.nf_torch_set_memory_fraction.argtypes = [c_double, c_int]
        L.nf_torch_set_memory_fraction.restype = c_int
        L.nf_torch_set_reserve.argtypes = [u64]
        L.nf_torch_set_reserve.restype = c_int
        L.nf_torch_set_pair_pages.argtypes = [u64]
        L.nf_torch_set_pair_pages.restype = c_int
        L.nf_torch_set_cuda_pool.argtypes = [c_int]
        L.nf_torch_set_cuda_pool.restype = c_int
        L.nf_torch_record_stream.argtypes = [vp, c_int, vp]
        L.nf_torch_record_stream.restype = c_int
        L.nf_torch_record_stream_hook.argtypes = [vp, vp]
        L.nf_torch_record_stream_hook.restype = None
        L.nf_torch_begin_allocate_to_pool.argtypes = [c_int, u64, u64, vp]
        L.nf_torch_begin_allocate_to_pool.restype = None
        L.nf_torch_end_allocate_to_pool.argtypes = [c_int, u64, u64]
        L.nf_torch_end_allocate_to_pool.restype = None
        L.nf_torch_release_pool.argtypes = [c_int, u64, u64]
        L.nf_torch_release_pool.restype = None
        L.nf_torch_graph_refusal.argtypes = [c_int]
        L.nf_torch_graph_refusal.restype = ctypes.c_char_p
        L.nf_torch_graph_pools.argtypes = [c_int, ctypes.c_char_p, ctypes.c_size_t]
        L.nf_torch_step.argtypes = [c_int]
        L.nf_torch_trim.argtypes = [c_int, u64]
        L.nf_torch_phase_mark.argtypes = [c_int, ctypes.POINTER(Phase)]
        L.nf_torch_phase_mark.restype = c_int
        L.nf_torch_phase_return.argtypes = [c_int, ctypes.POINTER(Phase), ctypes.POINTER(u64)]
        L.nf_torch_phase_return.restype = c_int
        L.nf_torch_check.argtypes = [c_int]
        L.nf_torch_stats_json.argtypes = [c_int, ctypes.c_char_p, ctypes.c_size_t]
        L.nf_torch_pool_exists.argtypes = [c_int]
        L.nf_torch_pool_devices.argtypes = []
        L.nf_torch_pool_devices.restype = u64
        L.nf_torch_reset_peaks.argtypes = [c_int]
        L.nf_torch_last_error.restype = ctypes.c_char_p
        L.nf_status_str.argtypes = [c_int]
        L.nf_status_str.restype = ctypes.c_char_p
        L.nf_version.restype = ctypes.c_char_p
        _LIB = L
    return _LIB


class NofragError(RuntimeError):
    """A nofrag call failed; the message carries the library's status text and last message."""


def check(status, what):
    if status != 0:
        L = lib()
        detail = L.nf_torch_last_error().decode(errors="replace")
        raise NofragError(f"{what}: {L.nf_status_str(status).decode()}" + (f" ({detail})" if detail else ""))
