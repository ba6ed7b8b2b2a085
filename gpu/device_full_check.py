"""The device filled by memory taken outside nofrag (cuMemAlloc through the driver, as NCCL's
buffers or another library would), under the PyTorch front end:

  python3 gpu/device_full_check.py full       the default backend: a request that needs new pages
                                              when the driver has none is served from idle pages
                                              (one warning, num_device_full); one too big for them
                                              fails as out of memory (RuntimeError); once the
                                              outside memory goes, requests succeed again, no
                                              empty_cache needed
  python3 gpu/device_full_check.py reserve    enable(reserve="6G"): the reserve is held from the
                                              first allocation and serves 5 GiB on a full device
  python3 gpu/device_full_check.py cuda-pool  backend="cuda-pool": the same full device; a request
                                              fails cleanly, live tensors intact, and succeeds once
                                              the outside memory is gone

Every live tensor's bytes are checked after each step. Prints one line per check and
"device_full_check MODE: PASSED" or "... FAILED"."""
import ctypes
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "python"))
import nofrag  # noqa: E402
import nofrag.torch  # noqa: E402

GIB = 1 << 30
MIB = 1 << 20
mode = sys.argv[1] if len(sys.argv) > 1 else "full"
if mode == "reserve":
    nofrag.torch.enable(reserve="6G")
elif mode == "cuda-pool":
    nofrag.torch.enable(backend="cuda-pool")
elif mode == "full":
    nofrag.torch.enable()
else:
    raise SystemExit(__doc__)
import torch  # noqa: E402

failures = []


def check(what, ok, detail=""):
    print(("ok   " if ok else "FAIL ") + what + (f" ({detail})" if detail else ""))
    if not ok:
        failures.append(what)


driver = ctypes.CDLL("libcuda.so.1")
driver.cuMemAlloc_v2.argtypes = [ctypes.POINTER(ctypes.c_uint64), ctypes.c_size_t]
driver.cuMemFree_v2.argtypes = [ctypes.c_uint64]
outside = []


def fill_device():
    """Takes device memory outside nofrag until the driver has none left (1 GiB, then 64 MiB, then
    2 MiB pieces); returns the bytes taken."""
    taken = 0
    for piece in (GIB, 64 * MIB, 2 * MIB):
        while True:
            ptr = ctypes.c_uint64(0)
            if driver.cuMemAlloc_v2(ctypes.byref(ptr), piece) != 0:
                break
            outside.append(ptr.value)
            taken += piece
    return taken


def release_outside():
    while outside:
        driver.cuMemFree_v2(outside.pop())


def tensor(nbytes, value):
    t = torch.empty(nbytes // 4, dtype=torch.float32, device="cuda")
    t.fill_(value)
    return t


def intact(tensors):
    """Each tensor still holds its value, checked on three windows of 1M elements (start, middle,
    end): a whole-tensor comparison would itself need memory the full device does not have."""
    window = 1 << 20
    for t, v in tensors:
        mid = max(0, t.numel() // 2 - window // 2)
        for part in (t[:window], t[mid:mid + window], t[-window:]):
            if not bool((part == v).all()):
                return False
    return True


torch.cuda.init()
live = []
if mode == "full":
    # Eight 512 MiB blocks and one of 1 GiB; every other 512 MiB block freed: 2 GiB of idle pages
    # in four 512 MiB holes, none of which fits 1.5 GiB.
    blocks = [tensor(512 * MIB, i) for i in range(8)]
    keep = tensor(GIB, 100.0)
    live = [(blocks[i], float(i)) for i in range(1, 8, 2)] + [(keep, 100.0)]
    for i in range(0, 8, 2):
        blocks[i] = None
    torch.cuda.synchronize()
    taken = fill_device()
    print(f"     took {taken / GIB:.1f} GiB outside nofrag; free now {torch.cuda.mem_get_info()[0] / MIB:.0f} MiB")
    try:
        c = tensor(1536 * MIB, 7.0)
        live.append((c, 7.0))
        check("1.5 GiB on a full device, served from idle pages", True)
    except RuntimeError as e:
        check("1.5 GiB on a full device, served from idle pages", False, str(e)[:200])
    st = nofrag.stats()
    check("the pool noted the full device", st.get("num_device_full", 0) >= 1, f"num_device_full {st.get('num_device_full')}")
    check("one warning names it", "memory outside this pool took it" in nofrag.last_error(), nofrag.last_error()[:160])
    check("live tensors intact", intact(live))
    try:
        tensor(2 * GIB, 1.0)
        check("2 GiB beyond the idle pages fails as out of memory", False, "it succeeded")
    except RuntimeError:
        check("2 GiB beyond the idle pages fails as out of memory", True)
    check("live tensors intact after the failure", intact(live))
    release_outside()
    d = tensor(2 * GIB, 9.0)
    live.append((d, 9.0))
    check("2 GiB once the outside memory is gone", True)
    check("live tensors intact at the end", intact(live))
elif mode == "reserve":
    first = tensor(MIB, 1.0)
    st = nofrag.stats()
    check("6 GiB held from the first allocation", st["reserved_bytes.current"] >= 6 * GIB,
          f"{st['reserved_bytes.current'] / GIB:.2f} GiB")
    taken = fill_device()
    print(f"     took {taken / GIB:.1f} GiB outside nofrag; free now {torch.cuda.mem_get_info()[0] / MIB:.0f} MiB")
    big = tensor(5 * GIB, 3.0)
    live = [(first, 1.0), (big, 3.0)]
    check("5 GiB served from the reserve on a full device", intact(live))
    del big
    live = [(first, 1.0)]
    torch.cuda.empty_cache()
    st = nofrag.stats()
    check("empty_cache keeps the reserve", st["reserved_bytes.current"] >= 6 * GIB,
          f"{st['reserved_bytes.current'] / GIB:.2f} GiB")
    release_outside()
else:
    warm = tensor(2 * GIB, 1.0)
    del warm  # freed into CUDA's pool, which keeps it (release threshold: never)
    keep = tensor(GIB, 4.0)
    torch.cuda.synchronize()
    held_before = nofrag.stats()["reserved_bytes.current"]
    taken = fill_device()
    print(f"     took {taken / GIB:.1f} GiB outside nofrag; free now {torch.cuda.mem_get_info()[0] / MIB:.0f} MiB;"
          f" CUDA's pool held {held_before / GIB:.2f} GiB before")
    live = [(keep, 4.0)]
    try:
        tensor(4 * GIB, 1.0)
        check("4 GiB on a full device fails as out of memory", False, "it succeeded")
    except RuntimeError:
        check("4 GiB on a full device fails as out of memory", True)
    st = nofrag.stats()
    print(f"     CUDA's pool holds {st['reserved_bytes.current'] / GIB:.2f} GiB after the failed request"
          f" (live {st['allocated_bytes.current'] / GIB:.2f} GiB)")
    check("the failure was counted, once", st.get("num_alloc_failures", 0) == 1, f"{st.get('num_alloc_failures')}")
    # Checked once the outside memory is gone: the comparison itself needs memory, and CUDA's pool
    # has no idle pages to lend it on a full device.
    release_outside()
    check("live tensors intact after the failure", intact(live))
    b = tensor(4 * GIB, 5.0)
    live.append((b, 5.0))
    check("4 GiB once the outside memory is gone", intact(live))
    st = nofrag.stats()
    check("calls were the block backend's", st.get("calls_block_alloc", 0) > 0 and st.get("calls_map", 0) == 0)
nofrag.check_pools()
print(f"device_full_check {mode}: {'PASSED' if not failures else 'FAILED'}")
sys.exit(1 if failures else 0)
