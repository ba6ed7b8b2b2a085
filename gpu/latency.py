"""Allocation latency through PyTorch: torch.empty + del pairs, one size at a time and mixed sizes
with 64 tensors live, under PyTorch's native allocator or under nofrag. Prints us per pair
(median of 5 rounds). Run each mode in its own process; compare the two in one call.

usage: python3 latency.py native|nofrag
"""
import os
import random
import statistics
import sys
import time

mode = sys.argv[1]
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "python"))
if mode == "nofrag":
    import nofrag.torch
    nofrag.torch.enable()
import torch  # noqa: E402

dev = torch.device("cuda")
torch.empty(1, device=dev)


def pairs(size, n=20000):
    t = time.perf_counter()
    for _ in range(n):
        x = torch.empty(size, dtype=torch.uint8, device=dev)
        del x
    return (time.perf_counter() - t) / n * 1e6


def mixed(n=20000):
    rng = random.Random(0)
    sizes = [rng.choice([4096, 65536, 1 << 20, 8 << 20, 64 << 20]) for _ in range(n)]
    live = [torch.empty(s, dtype=torch.uint8, device=dev) for s in sizes[:64]]
    t = time.perf_counter()
    for i, s in enumerate(sizes):
        live[i % 64] = torch.empty(s, dtype=torch.uint8, device=dev)
    return (time.perf_counter() - t) / n * 1e6


row = {}
for name, fn in (("4KiB", lambda: pairs(4096)), ("1MiB", lambda: pairs(1 << 20)),
                 ("64MiB", lambda: pairs(64 << 20)), ("mixed64", mixed)):
    fn()
    row[name] = statistics.median(fn() for _ in range(5))
torch.cuda.synchronize()
line = mode.ljust(8) + "  ".join(f"{k} {v:5.2f} us" for k, v in row.items())
if mode == "nofrag":
    import nofrag
    st = nofrag.stats()
    keys = ("backend_calls", "calls_map", "calls_unmap", "calls_event_record", "calls_event_query",
            "calls_event_sync", "num_remaps", "num_allocs")
    line += "\n  nofrag: " + ", ".join(f"{k} {st[k]}" for k in keys)
print(line)
