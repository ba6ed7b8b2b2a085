"""The PyTorch hooks nofrag wires by wrapping torch functions, on a real GPU:
record_stream keeps a block from another stream until that stream's work is done, empty_cache
gives idle memory back, set_per_process_memory_fraction becomes the pool's cap.
Exits 1 on any failed check."""
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


dev = torch.device("cuda")
side = torch.cuda.Stream()
# record_stream: a tensor made on the current stream, used by a long kernel on `side`, then freed.
x = torch.empty(64 << 20, dtype=torch.uint8, device=dev)
with torch.cuda.stream(side):
    y = x.float().sum()
    torch.cuda._sleep(1_000_000_000)  # keeps `side` busy for about half a second
x.record_stream(side)
ptr = x.untyped_storage().data_ptr()
del x
pending = not side.query()
z = torch.empty(64 << 20, dtype=torch.uint8, device=dev)
check(pending, "the side stream was still busy when the block was freed (the next check means something)")
check(z.untyped_storage().data_ptr() != ptr,
      "record_stream: the block is not handed out again while the other stream's work runs")
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
nofrag.check_pools()
print("hooks_check:", "PASSED" if not failures else f"FAILED {failures}")
sys.exit(1 if failures else 0)
