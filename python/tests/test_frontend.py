"""The Python front end without a GPU: settings, library loading, enable() against a stand-in torch
module, and the C entry points' behaviour where no CUDA driver exists."""
import ctypes
import json
import importlib
import os
import types
import unittest

import nofrag
from nofrag import _lib
from tests.stand_in import StandInTorchCase


def fake_torch(initialized=False, record_stream_setter=False, graph_setters=True):
    """A stand-in for the parts of torch that nofrag.torch touches, recording what it is asked;
    record_stream_setter: its allocator object has set_record_stream_fn and
    set_begin_allocate_to_pool, and with graph_setters also set_end_allocate_to_pool_fn and
    set_release_pool, as recent PyTorch's does; without them, torch.cuda.CUDAGraph's
    capture_begin is what nofrag must wrap."""
    calls = {}
    torch = types.ModuleType("torch")
    cuda = types.ModuleType("torch.cuda")
    memory = types.ModuleType("torch.cuda.memory")

    class Native:
        def set_record_stream_fn(self, pointer):
            calls["record_stream_fn"] = pointer

        def set_begin_allocate_to_pool(self, pointer):
            calls["begin_allocate_to_pool"] = pointer

        if graph_setters:
            def set_end_allocate_to_pool_fn(self, pointer):
                calls["end_allocate_to_pool"] = pointer

            def set_release_pool(self, pointer):
                calls["release_pool"] = pointer

    class CUDAPluggableAllocator:
        def __init__(self, path, alloc, free):
            calls["allocator"] = (path, alloc, free)

        if record_stream_setter:
            def allocator(self):
                return Native()

    memory.CUDAPluggableAllocator = CUDAPluggableAllocator
    memory.change_current_allocator = lambda a: calls.setdefault("changed", a)
    memory.empty_cache = lambda: calls.setdefault("original_empty_cache", True)
    cuda.memory = memory
    cuda.is_initialized = lambda: initialized
    cuda.empty_cache = memory.empty_cache
    cuda.set_per_process_memory_fraction = lambda f, d=None: None
    cuda.current_device = lambda: 0
    torch.cuda = cuda
    _C = types.ModuleType("torch._C")  # PyTorch's entry points that refuse under a pluggable allocator

    def refuses(name):
        def entry(device):
            raise RuntimeError(f"CUDAPluggableAllocator does not yet support {name}")
        return entry
    _C._cuda_memoryStats = refuses("getDeviceStats")
    _C._cuda_resetPeakMemoryStats = refuses("resetPeakStats")
    _C._cuda_resetAccumulatedMemoryStats = refuses("resetAccumulatedStats")
    torch._C = _C

    class Tensor:
        def record_stream(self, stream):
            calls["record_stream"] = stream

    torch.Tensor = Tensor

    class CUDAGraph:
        def capture_begin(self, pool=None):
            calls["capture_begin"] = pool
    cuda.CUDAGraph = CUDAGraph
    return torch, calls


class SettingsTest(unittest.TestCase):
    def test_parse_bytes(self):
        self.assertEqual(nofrag.parse_bytes("12G"), 12 << 30)
        self.assertEqual(nofrag.parse_bytes("512MiB"), 512 << 20)
        self.assertEqual(nofrag.parse_bytes("1.5k"), 1536)
        self.assertEqual(nofrag.parse_bytes(4096), 4096)
        self.assertEqual(nofrag.parse_bytes("18446744073709551615"), (1 << 64) - 1)  # exact, not via float
        for bad in ("", "-1G", "12X", "G", "1e9", "18446744073709551616", "16777216T", "99999999999999999999"):
            with self.assertRaises(ValueError):
                nofrag.parse_bytes(bad)

    def test_settings_from_arguments_then_environment(self):
        import nofrag.torch as nt
        env = {"NOFRAG_CAPACITY": "8G", "NOFRAG_PEER_ACCESS": "yes", "NOFRAG_LOG_LEVEL": "2",
               "NOFRAG_PAGE_SIZE": "8M", "NOFRAG_REUSE_ACROSS_STREAMS": "0", "NOFRAG_RESERVE": "40G"}
        saved = {k: os.environ.get(k) for k in env}
        os.environ.update(env)
        try:
            s = nt.settings(margin="1G")
            self.assertEqual(s["capacity"], 8 << 30)
            self.assertTrue(s["peer_access"])
            self.assertFalse(nt.settings(peer_access=False)["peer_access"])
            del os.environ["NOFRAG_PEER_ACCESS"]
            self.assertIsNone(nt.settings()["peer_access"])  # granted once a second GPU is used
            self.assertEqual(s["log_level"], 2)
            self.assertEqual(s["margin"], 1 << 30)
            self.assertEqual(s["page_size"], 8 << 20)
            self.assertEqual(s["reserve"], 40 << 30)
            self.assertEqual(nt.settings(reserve="1G")["reserve"], 1 << 30)
            del os.environ["NOFRAG_RESERVE"]
            self.assertEqual(nt.settings()["reserve"], 0)
            self.assertFalse(s["reuse_across_streams"])
            self.assertTrue(nt.settings(reuse_across_streams=True)["reuse_across_streams"])
            os.environ["NOFRAG_REUSE_ACROSS_STREAMS"] = "1"
            self.assertTrue(nt.settings()["reuse_across_streams"])
            del os.environ["NOFRAG_REUSE_ACROSS_STREAMS"]
            self.assertIsNone(nt.settings()["reuse_across_streams"])  # enable() decides
            self.assertEqual(nt.settings(page_size="4M")["page_size"], 4 << 20)
            for bad in ("3M", "1M", "6M"):
                with self.assertRaisesRegex(ValueError, "page size"):
                    nt.settings(page_size=bad)
            self.assertEqual(nt.settings(capacity="1G")["capacity"], 1 << 30)
            self.assertEqual(nt.settings()["backend"], "vmm")
            self.assertEqual(nt.settings(backend="CUDA-pool")["backend"], "cuda-pool")
            os.environ["NOFRAG_BACKEND"] = "cuda-pool"
            self.assertEqual(nt.settings()["backend"], "cuda-pool")
            os.environ["NOFRAG_BACKEND"] = "malloc"
            with self.assertRaisesRegex(ValueError, "NOFRAG_BACKEND.*vmm, cuda-pool"):
                nt.settings()
            del os.environ["NOFRAG_BACKEND"]
            self.assertEqual(nt.settings()["pair_pages"], 0)
            self.assertEqual(nt.settings(pair_pages=128)["pair_pages"], 128)
            os.environ["NOFRAG_PAIR_PAGES"] = "64"
            self.assertEqual(nt.settings()["pair_pages"], 64)
            os.environ["NOFRAG_PAIR_PAGES"] = "-1"
            with self.assertRaisesRegex(ValueError, "NOFRAG_PAIR_PAGES"):
                nt.settings()
            del os.environ["NOFRAG_PAIR_PAGES"]
            os.environ["NOFRAG_CAPACITY_FRACTION"] = "1.5"
            with self.assertRaisesRegex(ValueError, "NOFRAG_CAPACITY_FRACTION"):
                nt.settings()
        finally:
            os.environ.pop("NOFRAG_CAPACITY_FRACTION", None)
            os.environ.pop("NOFRAG_PAIR_PAGES", None)
            os.environ.pop("NOFRAG_BACKEND", None)
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v


class LibraryTest(unittest.TestCase):
    def test_exports_only_nf_symbols_needed_by_pytorch(self):
        L = _lib.lib()
        for name in ("nf_torch_alloc", "nf_torch_free", "nf_torch_configure", "nf_alloc", "nf_free"):
            self.assertTrue(hasattr(L, name), name)
        self.assertEqual(nofrag.version().count("."), 2)

    def test_no_driver_means_null_and_a_reason(self):
        L = _lib.lib()
        if os.path.exists("/dev/nvidia0"):
            self.skipTest("a GPU is present")
        L.nf_torch_alloc.restype = ctypes.c_void_p
        L.nf_torch_alloc.argtypes = [ctypes.c_size_t, ctypes.c_int, ctypes.c_void_p]
        self.assertIsNone(L.nf_torch_alloc(1024, 0, None))
        self.assertIn("cuda:0", nofrag.last_error())
        # ... with the backend's own reason (no cuda.h in this build, or no libcuda.so.1).
        self.assertRegex(nofrag.last_error(), r"\(device 0: cuda backend: .+\)$")
        self.assertEqual(nofrag.stats(0), {})  # no pool was created
        nofrag.trim()  # nothing to trim: no error
        nofrag.check_pools()

    def test_configure_peer_access_values(self):
        """0 never, 1 from the first pool, 2 once a second device's pool is made; nothing else."""
        L = _lib.lib()
        args = (0, 0.0, 512 << 20)
        for peers in (0, 1, 2):
            self.assertEqual(L.nf_torch_configure(*args, peers, 1, 0, 0), 0, peers)
        for bad in (-1, 3):
            self.assertNotEqual(L.nf_torch_configure(*args, bad, 1, 0, 0), 0, bad)

    def test_torch_layout_reads_the_library_json(self):
        """The names _torch_layout reads are the ones nf_stats_to_json writes: a pool on the host
        backend (a zeroed nf_config is a valid one), two allocations, its JSON mapped."""
        L = _lib.lib()
        vp = ctypes.c_void_p
        backend, pool = vp(), vp()
        config = ctypes.create_string_buffer(512)  # zeros: no cap, default alignment, no log
        self.assertEqual(L.nf_backend_host_create(ctypes.c_bool(False), ctypes.c_uint64(0), ctypes.byref(backend)), 0)
        self.assertEqual(L.nf_pool_create(config, backend, ctypes.byref(pool)), 0)
        try:
            ptrs = [vp(), vp()]
            for p, size in zip(ptrs, (3 << 20, 1000)):
                self.assertEqual(L.nf_alloc(pool, ctypes.c_size_t(size), None, ctypes.byref(p)), 0)
            self.assertEqual(L.nf_free(pool, ptrs[1], None), 0)
            st = ctypes.create_string_buffer(8192)
            self.assertEqual(L.nf_stats_get(pool, st), 0)
            text = ctypes.create_string_buffer(16384)
            self.assertEqual(L.nf_stats_to_json(st, text, ctypes.c_size_t(len(text)), None), 0)
            out = nofrag._torch_layout(json.loads(text.value.decode()))
            self.assertEqual(out["allocated_bytes"]["all"],
                             {"current": 3 << 20, "peak": (3 << 20) + 1024, "allocated": (3 << 20) + 1024, "freed": 1024})
            self.assertEqual(out["allocation"]["all"], {"current": 1, "peak": 2, "allocated": 2, "freed": 1})
            self.assertEqual(out["reserved_bytes"]["all"]["current"], out["segment"]["all"]["current"] * (2 << 20))
            self.assertGreaterEqual(out["segment"]["all"]["current"], 2)
            self.assertEqual(out["num_device_alloc"], out["segment"]["all"]["allocated"])
            # With CUDA graphs' pools (nofrag.stats() adds their figures): counted in, consistent.
            with_graphs = dict(json.loads(text.value.decode()), graph_allocated_bytes=5 << 20,
                               graph_reserved_bytes=6 << 20)
            graphed = nofrag._torch_layout(with_graphs)["allocated_bytes"]["all"]
            self.assertEqual(graphed["current"], (3 << 20) + (5 << 20))
            self.assertEqual(graphed["allocated"] - graphed["freed"], graphed["current"])
            self.assertGreaterEqual(graphed["peak"], graphed["current"])
            self.assertEqual(nofrag._torch_layout(with_graphs)["reserved_bytes"]["all"]["current"],
                             out["reserved_bytes"]["all"]["current"] + (6 << 20))
            L.nf_free(pool, ptrs[0], None)
        finally:
            L.nf_pool_destroy(pool)
            L.nf_backend_destroy(backend)

    def test_configure_rejects_bad_values(self):
        L = _lib.lib()
        self.assertNotEqual(L.nf_torch_configure(0, 1.5, 0, 0, 1, 0, 1), 0)
        self.assertNotEqual(L.nf_torch_configure(0, 0.0, 0, 0, 9, 0, 1), 0)
        self.assertNotEqual(L.nf_torch_configure(0, 0.0, 0, 0, 1, 6 << 20, 1), 0)


class EnableTest(StandInTorchCase):
    def tearDown(self):
        super().tearDown()
        import nofrag.torch as nt
        nt._enabled = False
        nt._active.clear()
        nt._hooks.clear()

    def test_too_late_is_a_clear_error(self):
        torch, calls = fake_torch(initialized=True)
        self.use_torch(torch)
        import nofrag.torch as nt
        with self.assertRaisesRegex(RuntimeError, "before CUDA is initialised"):
            nt.enable()
        self.assertNotIn("changed", calls)
        self.assertFalse(nt.enabled())

    def test_enable_installs_allocator_and_hooks(self):
        torch, calls = fake_torch()
        self.use_torch(torch)
        import nofrag.torch as nt
        nt.enable(capacity="1G")
        self.assertTrue(nt.enabled())
        path, alloc, free = calls["allocator"]
        self.assertEqual((alloc, free), ("nf_torch_alloc", "nf_torch_free"))
        self.assertEqual(path, _lib.library_path())
        self.assertIn("changed", calls)
        torch.cuda.empty_cache()  # now nofrag's trim, which succeeds with no pool
        self.assertNotIn("original_empty_cache", calls)
        nt.enable()  # a second call does nothing
        importlib.reload(nt)  # reloading without NOFRAG_ENABLE must not enable again

    def test_phase_gives_back_what_the_phase_took(self):
        """nofrag.phase() on device pools made on the host backend, in a child process (the
        choice of backend is for the process's life): a phase that allocates 64 MiB and frees it
        gives it back on leaving, on each of the two devices with a pool; without the phase the
        pool keeps it."""
        import subprocess
        import sys
        child = '''
import ctypes, json, nofrag
from nofrag import _lib
L = _lib.lib()
assert L.nf_torch_use_host_backend() == 0
L.nf_torch_alloc.restype = ctypes.c_void_p
L.nf_torch_alloc.argtypes = [ctypes.c_size_t, ctypes.c_int, ctypes.c_void_p]
L.nf_torch_free.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_void_p]
keep = L.nf_torch_alloc(8 << 20, 0, None)
keep5 = L.nf_torch_alloc(8 << 20, 5, None)
def burst(device=0):
    blocks = [L.nf_torch_alloc(4 << 20, device, None) for _ in range(16)]
    assert all(blocks)
    for b in blocks:
        L.nf_torch_free(b, 0, device, None)
before = nofrag.stats(0)["reserved_bytes.current"]
before5 = nofrag.stats(5)["reserved_bytes.current"]
with nofrag.phase() as released:
    burst()
    burst(5)
inside = nofrag.stats(0)["reserved_bytes.current"]
inside5 = nofrag.stats(5)["reserved_bytes.current"]
burst()
without = nofrag.stats(0)["reserved_bytes.current"]
nofrag.check_pools()
print(json.dumps({"before": before, "after_phase": inside, "released": released.get(0, -1),
                  "before5": before5, "after_phase5": inside5, "released5": released.get(5, -1),
                  "devices": sorted(released), "mask": L.nf_torch_pool_devices(),
                  "after_plain_burst": without}))
'''
        env = dict(os.environ, PYTHONPATH=os.path.dirname(os.path.dirname(nofrag.__file__)))
        out = subprocess.run([sys.executable, "-c", child], capture_output=True, text=True, env=env)
        self.assertEqual(out.returncode, 0, out.stderr)
        r = json.loads(out.stdout.strip().splitlines()[-1])
        self.assertEqual(r["after_phase"], r["before"])
        self.assertGreaterEqual(r["released"], 64 << 20)
        # a phase covers every device with a pool (found from one mask of them), and only those
        self.assertEqual(r["mask"], 1 | 1 << 5)
        self.assertEqual(r["devices"], [0, 5])
        self.assertEqual(r["after_phase5"], r["before5"])
        self.assertGreaterEqual(r["released5"], 64 << 20)
        self.assertGreaterEqual(r["after_plain_burst"], r["before"] + (64 << 20))

    def test_hf_callback_settles_after_evaluation_and_save(self):
        """hf_callback() with a stand-in transformers module, on host-backend pools in a child
        process: after a step end, an evaluation burst is given back at on_evaluate, and a
        checkpoint's at on_save; without a step end nothing is done."""
        import subprocess
        import sys
        child = '''
import ctypes, json, sys, types
transformers = types.ModuleType("transformers")
class TrainerCallback:
    pass
transformers.TrainerCallback = TrainerCallback
sys.modules["transformers"] = transformers
import nofrag
from nofrag import _lib
L = _lib.lib()
assert L.nf_torch_use_host_backend() == 0
L.nf_torch_alloc.restype = ctypes.c_void_p
L.nf_torch_alloc.argtypes = [ctypes.c_size_t, ctypes.c_int, ctypes.c_void_p]
L.nf_torch_free.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_void_p]
def burst(n):
    blocks = [L.nf_torch_alloc(4 << 20, 0, None) for _ in range(n)]
    for b in blocks:
        L.nf_torch_free(b, 0, 0, None)
held = lambda: nofrag.stats(0)["reserved_bytes.current"]
cb = nofrag.hf_callback()
burst(4)
cb.on_evaluate(None, None, None)   # no step mark yet: nothing to return to
before_any_step = held()
cb.on_step_end(None, None, None)
marked = held()
burst(16)                          # an evaluation
after_eval = held()
cb.on_evaluate(None, None, None)
settled_eval = held()
burst(24)                          # a checkpoint save
cb.on_save(None, None, None)
settled_save = held()
print(json.dumps({"before_any_step": before_any_step, "marked": marked, "after_eval": after_eval,
                  "settled_eval": settled_eval, "settled_save": settled_save,
                  "steps": nofrag.stats(0)["num_steps"]}))
'''
        env = dict(os.environ, PYTHONPATH=os.path.dirname(os.path.dirname(nofrag.__file__)))
        out = subprocess.run([sys.executable, "-c", child], capture_output=True, text=True, env=env)
        self.assertEqual(out.returncode, 0, out.stderr)
        r = json.loads(out.stdout.strip().splitlines()[-1])
        self.assertEqual(r["steps"], 1)
        self.assertGreater(r["after_eval"], r["marked"])
        self.assertEqual(r["settled_eval"], r["marked"])
        self.assertEqual(r["settled_save"], r["marked"])

    def test_cuda_pool_backend_refuses_page_size_and_reserve(self):
        torch, calls = fake_torch()
        self.use_torch(torch)
        import nofrag.torch as nt
        for extra in ({"page_size": "4M"}, {"reserve": "1G"}, {"pair_pages": 128}):
            with self.assertRaisesRegex(ValueError, "backend='cuda-pool'"):
                nt.enable(backend="cuda-pool", **extra)
            self.assertNotIn("changed", calls)
            self.assertFalse(nt.enabled())
        nt.enable(backend="cuda-pool")
        self.assertTrue(nt.enabled())
        self.assertEqual(nt.active_settings()["backend"], "cuda-pool")

    def test_empty_cache_and_trim_wait_for_the_device_first(self):
        """Released CUDA graph pools are destroyed by the trim, so empty_cache and nofrag.trim
        must wait for the device first (a graph's last replay may still run); not before CUDA
        is initialised."""
        torch, calls = fake_torch()
        self.use_torch(torch)
        import nofrag.torch as nt
        nt.enable()
        order = []
        L = _lib.lib()
        real_trim = L.nf_torch_trim
        torch.cuda.synchronize = lambda: order.append("synchronize")
        try:
            L.nf_torch_trim = lambda device, keep: order.append("trim") or real_trim(device, keep)
            torch.cuda.empty_cache()  # CUDA not initialised yet: nothing to wait for
            self.assertEqual(order, ["trim"])
            torch.cuda.is_initialized = lambda: True
            order.clear()
            torch.cuda.empty_cache()
            self.assertEqual(order, ["synchronize", "trim"])
            order.clear()
            nofrag.trim()
            self.assertEqual(order, ["synchronize", "trim"])
        finally:
            L.nf_torch_trim = real_trim

    def test_wrapped_hooks(self):
        torch, calls = fake_torch()
        self.use_torch(torch)
        import nofrag.torch as nt
        nt._hooks.clear()
        nt.enable()
        # The memory fraction reaches nofrag, which has no GPU here: a clear error, not a crash.
        if not os.path.exists("/dev/nvidia0"):
            with self.assertRaisesRegex(nofrag.NofragError, "set_per_process_memory_fraction"):
                torch.cuda.set_per_process_memory_fraction(0.5, 0)
        # record_stream on a CPU tensor goes straight to PyTorch's own method.
        t = torch.Tensor()
        t.is_cuda = False
        t.record_stream("side")
        self.assertEqual(calls["record_stream"], "side")
        self.assertIn("record_stream", nt._hooks)
        # Without the C++ callback NCCL's stream uses stay unseen: no reuse across streams.
        self.assertFalse(nt.active_settings()["reuse_across_streams"])

    def test_memory_statistics_answered_by_nofrag(self):
        torch, calls = fake_torch()
        self.use_torch(torch)
        import nofrag.torch as nt
        nt.enable()
        # No pool on device 0 here (no GPU): PyTorch's layout, every figure 0, and no refusal.
        nested = torch._C._cuda_memoryStats(0)
        for key in ("allocated_bytes", "reserved_bytes", "active_bytes", "requested_bytes",
                    "inactive_split_bytes", "allocation", "active", "segment", "inactive_split"):
            self.assertEqual(set(nested[key]), {"all", "large_pool", "small_pool"}, key)
            self.assertEqual(nested[key]["all"], {"current": 0, "peak": 0, "allocated": 0, "freed": 0})
        for key in ("num_ooms", "num_alloc_retries", "num_device_alloc", "num_device_free"):
            self.assertEqual(nested[key], 0)
        torch._C._cuda_resetPeakMemoryStats(0)
        torch._C._cuda_resetAccumulatedMemoryStats(0)
        self.assertIn("_cuda_memoryStats", nt._hooks)

    def test_device_arguments(self):
        torch, calls = fake_torch()
        torch.cuda.current_device = lambda: 3

        class Device:
            def __init__(self, index):
                self.index = index
        torch.device = lambda text: Device(None if text == "cuda" else int(text.split(":")[1]))
        self.use_torch(torch)
        self.assertEqual([nofrag._device(d) for d in (None, 2, "cuda:1", "cuda", Device(5), Device(None))],
                         [3, 2, 1, 3, 5, 3])

    def test_torch_layout_of_nofrag_figures(self):
        nf = {"granularity_bytes": 2 << 20, "num_alloc_failures": 3, "calls_page_create": 40,
              "calls_page_release": 10,
              "allocated_bytes.current": 5000, "allocated_bytes.peak": 9000, "allocated_bytes.total": 20000,
              "reserved_bytes.current": 30 << 20, "reserved_bytes.peak": 60 << 20,
              "reserved_bytes.total": 80 << 20,
              "allocation.current": 4, "allocation.peak": 9, "allocation.total": 25}
        out = nofrag._torch_layout(nf)
        self.assertEqual(out["allocated_bytes"]["all"],
                         {"current": 5000, "peak": 9000, "allocated": 20000, "freed": 15000})
        self.assertEqual(out["allocated_bytes"]["large_pool"], out["allocated_bytes"]["all"])
        self.assertEqual(out["allocated_bytes"]["small_pool"]["allocated"], 0)
        self.assertEqual(out["reserved_bytes"]["all"]["peak"], 60 << 20)
        self.assertEqual(out["segment"]["all"], {"current": 15, "peak": 30, "allocated": 40, "freed": 25})
        self.assertEqual(out["allocation"]["all"]["freed"], 21)
        self.assertEqual((out["num_ooms"], out["num_device_alloc"], out["num_device_free"]), (3, 40, 10))
        # After a reset of the accumulated figures, they count from it; current and peak do not.
        later = dict(nf, **{"allocated_bytes.current": 6000, "allocated_bytes.total": 26000,
                            "num_alloc_failures": 4})
        after = nofrag._torch_layout(later, base=out)
        self.assertEqual(after["allocated_bytes"]["all"],
                         {"current": 6000, "peak": 9000, "allocated": 6000, "freed": 5000})
        self.assertEqual(after["num_ooms"], 1)

    def test_record_stream_callback_set_where_pytorch_has_the_setter(self):
        torch, calls = fake_torch(record_stream_setter=True)
        self.use_torch(torch)
        import nofrag.torch as nt
        original = torch.Tensor.record_stream
        nt.enable()
        L = _lib.lib()
        self.assertEqual(calls["record_stream_fn"],
                         ctypes.cast(L.nf_torch_record_stream_hook, ctypes.c_void_p).value)
        self.assertIs(torch.Tensor.record_stream, original)  # the C++ callback covers it
        self.assertNotIn("record_stream", nt._hooks)
        self.assertTrue(nt.active_settings()["reuse_across_streams"])  # every use is heard
        L.nf_torch_record_stream_hook(ctypes.c_void_p(0x1000), None)  # no pool holds it: ignored

    def test_graph_pool_hooks_set_where_pytorch_has_the_setters(self):
        """Where PyTorch lets all three be set, nofrag hears a capture's start and end and a pool's
        release, and captures are not wrapped. Without a driver, a capture's start reports why the
        device cannot be opened (with no PyTorch loaded it cannot throw, so it leaves the message)."""
        torch, calls = fake_torch(record_stream_setter=True)
        self.use_torch(torch)
        import nofrag.torch as nt
        original = torch.cuda.CUDAGraph.capture_begin
        nt.enable()
        L = _lib.lib()
        for key, fn in (("begin_allocate_to_pool", L.nf_torch_begin_allocate_to_pool),
                        ("end_allocate_to_pool", L.nf_torch_end_allocate_to_pool),
                        ("release_pool", L.nf_torch_release_pool)):
            self.assertEqual(calls[key], ctypes.cast(fn, ctypes.c_void_p).value, key)
        self.assertIs(torch.cuda.CUDAGraph.capture_begin, original)  # the hooks cover captures
        L.nf_torch_begin_allocate_to_pool(2, 1, 0, None)
        self.assertRegex(nofrag.last_error(), r"^cannot open cuda:2")
        L.nf_torch_end_allocate_to_pool(2, 1, 0)  # no capture under way: nothing to end
        L.nf_torch_release_pool(2, 1, 0)
        L.nf_torch_release_pool(99, 1, 0)  # out of range: ignored
        buf = ctypes.create_string_buffer(256)
        self.assertEqual(L.nf_torch_graph_pools(2, buf, len(buf)), 0)
        self.assertEqual(json.loads(buf.value.decode()),
                         {"graph_pools": 0, "graph_reserved_bytes": 0, "graph_allocated_bytes": 0})
        self.assertNotEqual(L.nf_torch_graph_pools(2, buf, 8), 0)  # too small a buffer

    def test_graph_capture_refused_where_the_end_hook_cannot_be_set(self):
        """A PyTorch that lets the begin hook be set but not the end and release hooks: nofrag
        could not tell when a capture ends, so captures are refused before they start."""
        torch, calls = fake_torch(record_stream_setter=True, graph_setters=False)
        self.use_torch(torch)
        import nofrag.torch as nt
        nt.enable()
        self.assertNotIn("begin_allocate_to_pool", calls)
        with self.assertRaisesRegex(RuntimeError, "cuda:0: this PyTorch does not let nofrag hear when a CUDA graph"):
            torch.cuda.CUDAGraph().capture_begin()
        self.assertNotIn("capture_begin", calls)  # PyTorch's capture never started

    def test_graph_capture_refused_without_the_pool_hook(self):
        torch, calls = fake_torch()
        self.use_torch(torch)
        import nofrag.torch as nt
        nt.enable()
        with self.assertRaisesRegex(RuntimeError, "cuda:0: this PyTorch does not let nofrag hear"):
            torch.cuda.CUDAGraph().capture_begin()
        self.assertNotIn("capture_begin", calls)  # PyTorch's capture never started
        self.assertIn("make_graphed_callables", nofrag.last_error())

    def test_reuse_across_streams_without_the_callback_warns(self):
        torch, calls = fake_torch()
        self.use_torch(torch)
        import nofrag.torch as nt
        with self.assertWarnsRegex(RuntimeWarning, "record-stream callback"):
            nt.enable(reuse_across_streams=True)
        self.assertTrue(nt.active_settings()["reuse_across_streams"])  # as asked

    def test_reuse_across_streams_can_be_turned_off_where_the_callback_is_set(self):
        torch, calls = fake_torch(record_stream_setter=True)
        self.use_torch(torch)
        import nofrag.torch as nt
        self.assertIsNone(nt.active_settings())  # before enable()
        nt.enable(reuse_across_streams=False)
        self.assertIn("record_stream_fn", calls)  # declarations still reach nofrag
        self.assertFalse(nt.active_settings()["reuse_across_streams"])


if __name__ == "__main__":
    unittest.main()
