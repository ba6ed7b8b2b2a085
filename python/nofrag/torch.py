"""Serving PyTorch's CUDA allocations from nofrag (torch.cuda.memory.CUDAPluggableAllocator).

    import nofrag.torch
    nofrag.torch.enable(capacity="70G")   # before anything touches CUDA

Settings (argument, else environment variable, else default):
    capacity           NOFRAG_CAPACITY           physical cap per device in bytes ("70G"): a budget,
                                                 used (up to 20% above the live peak) before idle
                                                 pages move: fewer page moves
    capacity_fraction  NOFRAG_CAPACITY_FRACTION  ... or as a fraction of the device's memory
    margin             NOFRAG_MARGIN             default cap = free memory at first use less this
                                                 (default 512M, left for the CUDA context and libraries);
                                                 a safety limit only: held memory follows the live peak
    peer_access        NOFRAG_PEER_ACCESS        other GPUs may read and write each device's memory
                                                 (copies between GPUs of one process need it): 1
                                                 from the first allocation, 0 never; default: from
                                                 the moment the process uses a second GPU
    log_level          NOFRAG_LOG_LEVEL          0 error, 1 warn (default), 2 info, 3 debug
    reserve            NOFRAG_RESERVE            physical memory each device's pool makes at once and
                                                 holds for the job's life ("40G"; default 0): kept
                                                 against memory others take later (NCCL, another
                                                 process); at most the cap
    page_size          NOFRAG_PAGE_SIZE          physical page size, a power-of-two multiple of 2M
                                                 (default 2M): larger pages, fewer driver calls,
                                                 coarser memory (docs/placement.md)
    pair_pages         NOFRAG_PAIR_PAGES         blocks of at least this many pages (of page_size) back
                                                 the pairs of pages inside them with one physical
                                                 allocation of two pages: about half the driver calls
                                                 for large blocks, a little more memory held, so
                                                 give a cap at least 3% above the live peak (default
                                                 0: off; 128 is what docs/placement.md measured)
    reuse_across_streams
                       NOFRAG_REUSE_ACROSS_STREAMS  memory freed on one stream with work still queued
                                                 serves other streams at once, each made to wait for
                                                 that work on the GPU (1/0). Default: on where this
                                                 PyTorch lets nofrag hear every stream use declared
                                                 in C++ (the allocator's record-stream callback,
                                                 which NCCL's collectives use), else off (turned
                                                 on there anyway: a RuntimeWarning). Off, memory
                                                 crosses streams only once all their work is done:
                                                 safe even for uses never declared, but FSDP holds
                                                 more and its steps wait (README, "Streams")
    backend            NOFRAG_BACKEND            "vmm" (default): nofrag places blocks in virtual memory
                                                 and backs them with pages; "cuda-pool": CUDA's own
                                                 stream-ordered memory pool places them
                                                 (cuMemAllocFromPoolAsync), with nofrag's cap,
                                                 statistics, trim and checks around it (no page size
                                                 or reserve then); CUDA graphs' pools stay on vmm
Setting NOFRAG_ENABLE=1 and importing nofrag.torch enables it with these settings.
"""
import os

from ._lib import NofragError, check, lib, library_path, parse_bytes

_enabled = False
_active = {}
_hooks = {}


def _setting(value, env, convert, default):
    if value is not None:
        return convert(value)
    raw = os.environ.get(env)
    if raw is None or raw == "":
        return default
    try:
        return convert(raw)
    except ValueError as e:
        raise ValueError(f"{env}={raw!r}: {e}") from None


def _fraction(x):
    f = float(x)
    if not 0 < f <= 1:
        raise ValueError(f"capacity fraction must be in (0, 1], got {x!r}")
    return f


def _flag(x):
    if isinstance(x, bool):
        return x
    s = str(x).strip().lower()
    if s in ("1", "true", "yes", "on"):
        return True
    if s in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"expected 1/0, true/false, got {x!r}")


def _level(x):
    n = int(x)
    if not 0 <= n <= 3:
        raise ValueError(f"log level must be 0..3, got {x!r}")
    return n


def _page_size(x):
    n = parse_bytes(x)
    if n & (n - 1) or (n and n < (2 << 20)):
        raise ValueError(f"page size must be a power of two of at least 2M, got {x!r}")
    return n


def _pair_pages(x):
    n = int(x)
    if not 0 <= n < 1 << 32:
        raise ValueError(f"pair_pages must be a number of pages from 0 (off), got {x!r}")
    return n


_BACKENDS = ("vmm", "cuda-pool")


def _backend(x):
    name = str(x).strip().lower()
    if name not in _BACKENDS:
        raise ValueError(f"backend must be one of {', '.join(_BACKENDS)}, got {x!r}")
    return name


def settings(capacity=None, capacity_fraction=None, margin=None, peer_access=None, log_level=None,
             page_size=None, reuse_across_streams=None, reserve=None, backend=None, pair_pages=None):
    """The effective settings, from arguments, then NOFRAG_* variables, then defaults."""
    return {
        "capacity": _setting(capacity, "NOFRAG_CAPACITY", parse_bytes, 0),
        "capacity_fraction": _setting(capacity_fraction, "NOFRAG_CAPACITY_FRACTION", _fraction, 0.0),
        "margin": _setting(margin, "NOFRAG_MARGIN", parse_bytes, 512 << 20),
        # None: granted once a second device is used (nf_torch_configure's value 2).
        "peer_access": _setting(peer_access, "NOFRAG_PEER_ACCESS", _flag, None),
        "log_level": _setting(log_level, "NOFRAG_LOG_LEVEL", _level, 1),
        "page_size": _setting(page_size, "NOFRAG_PAGE_SIZE", _page_size, 0),
        # None: decided by enable(), on where the record-stream callback could be set.
        "reuse_across_streams": _setting(reuse_across_streams, "NOFRAG_REUSE_ACROSS_STREAMS", _flag, None),
        "reserve": _setting(reserve, "NOFRAG_RESERVE", parse_bytes, 0),
        "backend": _setting(backend, "NOFRAG_BACKEND", _backend, "vmm"),
        "pair_pages": _setting(pair_pages, "NOFRAG_PAIR_PAGES", _pair_pages, 0),
    }


def enabled():
    return _enabled


def active_settings():
    """The settings enable() applied (reuse_across_streams decided), or None before it ran."""
    return dict(_active) if _active else None


def enable(capacity=None, capacity_fraction=None, margin=None, peer_access=None, log_level=None,
           page_size=None, reuse_across_streams=None, reserve=None, backend=None, pair_pages=None):
    """Makes nofrag PyTorch's CUDA allocator. Must run before CUDA is initialised (before the first
    tensor on a GPU, torch.cuda.synchronize(), and the like); raises RuntimeError if it is too late.
    Calling it again after success does nothing."""
    global _enabled
    if _enabled:
        return
    import torch
    if torch.cuda.is_initialized():
        raise RuntimeError(
            "nofrag.torch.enable() must run before CUDA is initialised, and CUDA already is in this "
            "process (something created a CUDA tensor or queried the device). Call it at the very "
            "start of the program, or set NOFRAG_ENABLE=1 and import nofrag.torch first.")
    s = settings(capacity, capacity_fraction, margin, peer_access, log_level, page_size, reuse_across_streams, reserve,
                 backend, pair_pages)
    if s["backend"] == "cuda-pool" and (s["page_size"] or s["reserve"] or s["pair_pages"]):
        raise ValueError("page_size, reserve and pair_pages shape nofrag's own pages; with backend='cuda-pool' "
                         "CUDA's memory pool places the blocks, so none can be set")
    L = lib()
    allocator = torch.cuda.memory.CUDAPluggableAllocator(library_path(), "nf_torch_alloc", "nf_torch_free")
    hooked = _hook_record_stream(allocator, L)
    _hook_graph_pools(allocator, L, torch)
    if s["reuse_across_streams"] is None:
        # Reusing across streams is safe when every stream that touches a block is known: the
        # callback brings NCCL's. Without it, FSDP's losses went NaN in 3 of 5 runs with reuse on
        # (gpu/fsdp_repeat.sh; docs/placement.md, last section), so the slower rule stays.
        s["reuse_across_streams"] = hooked
    elif s["reuse_across_streams"] and not hooked:
        import warnings
        warnings.warn("nofrag: reuse_across_streams is on, but this PyTorch has no record-stream callback "
                      "setter, so stream uses declared in C++ (NCCL's collectives) go unheard; FSDP training "
                      "went NaN that way. Turn it off unless no such stream touches your tensors.",
                      RuntimeWarning, stacklevel=2)
    peers = 2 if s["peer_access"] is None else int(s["peer_access"])
    check(L.nf_torch_configure(s["capacity"], s["capacity_fraction"], s["margin"], peers,
                               s["log_level"], s["page_size"], int(s["reuse_across_streams"])),
          "nofrag.torch.enable")
    check(L.nf_torch_set_reserve(s["reserve"]), "nofrag.torch.enable")
    check(L.nf_torch_set_pair_pages(s["pair_pages"]), "nofrag.torch.enable")
    check(L.nf_torch_set_cuda_pool(int(s["backend"] == "cuda-pool")), "nofrag.torch.enable")
    torch.cuda.memory.change_current_allocator(allocator)
    _install_hooks(torch, wrap_record_stream=not hooked)
    _active.update(s)
    _enabled = True


def _hook_record_stream(allocator, L):
    """PyTorch's C++ code declares other streams' uses of a tensor through the allocator's
    record-stream callback (tensor.record_stream does, and so does NCCL's process group for the
    tensors of its collectives, unless TORCH_NCCL_AVOID_RECORD_STREAMS=1); a pluggable allocator
    gets no such call unless the callback is set. Sets it to nofrag's where this PyTorch has the
    setter, and returns whether it did."""
    return _set_native_hook(allocator, "set_record_stream_fn", L.nf_torch_record_stream_hook)


def _set_native_hook(allocator, setter_name, function):
    """Hands the C function to the pluggable allocator's setter of that name; False where this
    PyTorch has no such setter, or one of another shape."""
    get_native = getattr(allocator, "allocator", None)
    native = get_native() if callable(get_native) else None
    setter = getattr(native, setter_name, None)
    if not callable(setter):
        return False
    import ctypes
    try:
        setter(ctypes.cast(function, ctypes.c_void_p).value)
    except (TypeError, RuntimeError):
        return False
    return True


def _has_native_setter(allocator, setter_name):
    get_native = getattr(allocator, "allocator", None)
    native = get_native() if callable(get_native) else None
    return callable(getattr(native, setter_name, None))


_GRAPH_SETTERS = ("set_end_allocate_to_pool_fn", "set_release_pool", "set_begin_allocate_to_pool")


def _hook_graph_pools(allocator, L, torch):
    """CUDA graph capture needs private memory: a graph replays at the addresses its kernels used
    during capture, so nofrag gives each graph pools of its own (nf_torch_begin_allocate_to_pool
    says more). PyTorch announces a capture's start and end and a pool's release through three
    hooks of the pluggable allocator; where all three can be set, they are, and graphs work.
    Otherwise torch.cuda.CUDAGraph.capture_begin is wrapped to refuse: without private pools every
    replay wrote over other tensors. Returns whether graphs are supported."""
    functions = (L.nf_torch_end_allocate_to_pool, L.nf_torch_release_pool, L.nf_torch_begin_allocate_to_pool)
    if all(_has_native_setter(allocator, name) for name in _GRAPH_SETTERS) and \
            all(_set_native_hook(allocator, name, fn) for name, fn in zip(_GRAPH_SETTERS, functions)):
        return True
    graph = getattr(torch.cuda, "CUDAGraph", None)
    if graph is None:
        return False

    def capture_begin(self, *args, **kwargs):
        raise RuntimeError(L.nf_torch_graph_refusal(torch.cuda.current_device()).decode(errors="replace"))
    _hooks["CUDAGraph.capture_begin"] = graph.capture_begin
    graph.capture_begin = capture_begin
    return False


def _install_hooks(torch, wrap_record_stream=True):
    """The public functions that would reach a pluggable allocator's optional hooks, which have no
    Python setters, are wrapped instead (record_stream only where the C++ callback could not be
    set: _hook_record_stream)."""
    L = lib()

    def empty_cache():
        # Released CUDA graph pools are destroyed here, which must wait for the graphs' last
        # replays (PyTorch's own empty_cache waits too: cudaFree synchronizes the device).
        if torch.cuda.is_initialized():
            torch.cuda.synchronize()
        check(L.nf_torch_trim(-1, 0), "torch.cuda.empty_cache (nofrag trim)")

    def set_per_process_memory_fraction(fraction, device=None):
        if device is None:
            dev = torch.cuda.current_device()
        elif isinstance(device, int):
            dev = device
        else:  # "cuda:1" or torch.device
            dev = torch.device(device).index or 0
        check(L.nf_torch_set_memory_fraction(float(fraction), dev), "set_per_process_memory_fraction")

    original_record_stream = torch.Tensor.record_stream

    def record_stream(self, stream):
        if self.is_cuda:
            ptr = self.untyped_storage().data_ptr()
            if ptr:
                L.nf_torch_record_stream(ptr, self.device.index, stream.cuda_stream)
        return original_record_stream(self, stream)

    # PyTorch's pluggable allocator refuses statistics ("does not yet support getDeviceStats"), so
    # torch.cuda.memory_allocated() and the like would raise in every script that logs memory.
    # The Python functions reach the allocator through these three torch._C entry points, which
    # take a device index; nofrag answers them instead.
    import nofrag

    _C = torch._C
    for name, fn in (("_cuda_memoryStats", nofrag.torch_memory_stats),
                     ("_cuda_resetPeakMemoryStats", nofrag.reset_peak_stats),
                     ("_cuda_resetAccumulatedMemoryStats", nofrag.reset_accumulated_stats)):
        _hooks[name] = getattr(_C, name, None)
        setattr(_C, name, fn)
    _hooks.update(empty_cache=torch.cuda.empty_cache,
                  set_per_process_memory_fraction=torch.cuda.set_per_process_memory_fraction)
    torch.cuda.empty_cache = empty_cache
    torch.cuda.memory.empty_cache = empty_cache
    torch.cuda.set_per_process_memory_fraction = set_per_process_memory_fraction
    torch.cuda.memory.set_per_process_memory_fraction = set_per_process_memory_fraction
    if wrap_record_stream:
        _hooks.update(record_stream=original_record_stream)
        torch.Tensor.record_stream = record_stream


if os.environ.get("NOFRAG_ENABLE", "") not in ("", "0"):
    enable()

__all__ = ["enable", "enabled", "settings", "NofragError"]
