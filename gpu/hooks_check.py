"""The PyTorch hooks nofrag wires by wrapping torch functions, on a real GPU:
record_stream hands a block used on another stream out again behind a device-side wait (reuse
across streams, the default where PyTorch has the record-stream callback) or keeps it until that
stream's work is done (NOFRAG_REUSE_ACROSS_STREAMS=0), empty_cache
gives idle memory back, set_per_process_memory_fraction becomes the pool's cap, and
torch.cuda.memory_allocated() / memory_stats() / reset_peak_memory_stats() / memory_summary()
read and reset nofrag's figures. Exits 1 on any failed check."""
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "python"))
import nofrag.torch  # noqa: E402

nofrag.torch.enable()
import torch  # noqa: E402
import nofrag  # noqa: E402

failures = []


def check(cond, what):
    print(("ok   " if cond else "FAIL ") + what)
    if not cond:
        failures.append(what)


print("     record_stream reaches nofrag through",
      "the Python wrapper" if "record_stream" in nofrag.torch._hooks else "PyTorch's C++ callback (set_record_stream_fn)")
dev = torch.device("cuda")
side = torch.cuda.Stream()
across = nofrag.torch.active_settings()["reuse_across_streams"]
# record_stream: a tensor made on the current stream is read by a kernel on `side` that starts only
# after a long sleep there, and freed meanwhile. The next tensor of that size, made on the current
# stream and filled at once, must not change what the side stream reads: without reuse across
# streams it gets other memory; with it it gets the same memory, and the current
# stream waits for the side stream on the GPU while the host goes on.
n = 64 << 20


def freed_while_read(sleep_cycles):
    """x is read on `side` after a sleep there and freed meanwhile; z, made next on the current
    stream, is filled at once. Returns x's old address, z, the sum the side stream saw, the pool's
    stats around z's allocation, and whether `side` was still busy after z's fill was queued."""
    x = torch.ones(n, dtype=torch.uint8, device=dev)
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        torch.cuda._sleep(sleep_cycles)
        seen = x.sum(dtype=torch.int64)
    x.record_stream(side)
    old = x.untyped_storage().data_ptr()
    del x
    before = nofrag.stats()
    z = torch.empty(n, dtype=torch.uint8, device=dev)
    z.fill_(3)
    after = nofrag.stats()
    busy = not side.query()
    return old, z, seen, before, after, busy


# Once with a short sleep, so that every kernel involved is loaded before the timed run (loading a
# kernel module the first time can wait for the device).
freed_while_read(1000)
torch.cuda.synchronize()
old, z, seen, before, after, busy = freed_while_read(2_000_000_000)  # about a second on `side`
if across:
    check(busy, "the side stream was still busy after the next allocation (the checks below mean something)")
    check(after["calls_event_sync"] == before["calls_event_sync"],
          "the allocation did not make the host wait for the side stream")
    check(z.untyped_storage().data_ptr() == old and after["calls_stream_wait"] > before["calls_stream_wait"],
          "record_stream, reuse across streams: the block is handed out again behind a device-side wait")
else:
    # Held near live, the only idle pages are the freed block's: the pool gives z another address
    # and, to back it with those pages, waits on the host for the side stream.
    check(z.untyped_storage().data_ptr() != old,
          "record_stream: the block is not handed out again while the other stream's work runs")
    print(f"     (host waits for the allocation: {after['calls_event_sync'] - before['calls_event_sync']}, "
          f"side stream still busy after it: {busy})")
check(int(seen.item()) == n, f"the side stream read the freed tensor's bytes, not the next one's "
      f"({int(seen.item())} == {n})")
torch.cuda.synchronize()
del z

before = nofrag.stats()["reserved_bytes.all.current"]
torch.cuda.empty_cache()
after = nofrag.stats()["reserved_bytes.all.current"]
check(after < before, f"empty_cache trims: reserved {before} -> {after}")

total = torch.cuda.get_device_properties(0).total_memory
torch.cuda.set_per_process_memory_fraction(0.05)
cap = nofrag.stats()["capacity_bytes"]
check(abs(cap - 0.05 * total) <= 2 << 20, f"set_per_process_memory_fraction(0.05): cap {cap} of {total}")
try:
    t = torch.empty(int(0.06 * total), dtype=torch.uint8, device=dev)
    check(False, f"an allocation above the cap raises (got a tensor at {t.data_ptr():#x})")
except RuntimeError as e:
    check("CUDA out of memory. Tried to allocate" in str(e),
          "an allocation above the cap raises RuntimeError worded as PyTorch's: " + str(e).splitlines()[0][:100])
    # The test Hugging Face Accelerate's batch-size finder applies to a RuntimeError.
    check(len(e.args) == 1 and "CUDA out of memory." in e.args[0], "recognised as an OOM by message (one argument)")
    check("out of memory" in nofrag.last_error(), "nofrag.last_error() has the report: " + nofrag.last_error()[:90])
torch.cuda.set_per_process_memory_fraction(0.9, device=0)
ok = torch.empty(int(0.06 * total), dtype=torch.uint8, device=dev)
check(ok is not None, "after raising the fraction the same allocation succeeds")
del ok

# PyTorch's memory statistics, which its pluggable allocator refuses, answered by nofrag.
a = torch.empty(96 << 20, dtype=torch.uint8, device=dev)
mine = nofrag.stats()
check(torch.cuda.memory_allocated() == mine["allocated_bytes.all.current"] > 0,
      f"torch.cuda.memory_allocated() {torch.cuda.memory_allocated()} is nofrag's live bytes")
check(torch.cuda.memory_reserved() == mine["reserved_bytes.all.current"],
      f"torch.cuda.memory_reserved() {torch.cuda.memory_reserved()} is nofrag's held bytes")
del a
peak_before = torch.cuda.max_memory_allocated()
torch.cuda.reset_peak_memory_stats()
check(torch.cuda.max_memory_allocated() == torch.cuda.memory_allocated() < peak_before,
      f"reset_peak_memory_stats: max_memory_allocated {peak_before} -> {torch.cuda.max_memory_allocated()}")
torch.cuda.reset_accumulated_memory_stats()
b = torch.empty(8 << 20, dtype=torch.uint8, device=dev)
st = torch.cuda.memory_stats()
check(st["allocation.all.allocated"] == 1 and st["allocated_bytes.all.allocated"] == 8 << 20,
      f"reset_accumulated_memory_stats: one allocation counted after it ({st['allocation.all.allocated']})")
del b
summary = torch.cuda.memory_summary()
check("Allocated memory" in summary, "torch.cuda.memory_summary() renders nofrag's figures")
nofrag.check_pools()
print("hooks_check:", "PASSED" if not failures else f"FAILED {failures}")
sys.exit(1 if failures else 0)
