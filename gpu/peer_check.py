"""Tensors moved between GPUs of one process under nofrag (what `device_map="auto"` and pipeline
splits in one process do): copies both ways, large and small, blocking and not, into existing
tensors, and a two-layer model split over two devices, forward and backward, against the same
model on one device. Each device has its own pool; NOFRAG_PEER_ACCESS=1 maps every page for the
other devices too.

  python3 gpu/peer_check.py             under nofrag (NOFRAG_PEER_ACCESS as set)
  PEER_CHECK_NATIVE=1 python3 gpu/peer_check.py    the same under PyTorch's allocator

Prints one line per check and "peer_check: PASSED" or "peer_check: FAILED"; skips (exit 0) with
fewer than two GPUs."""
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "python"))
import nofrag.torch  # noqa: E402

NATIVE = os.environ.get("PEER_CHECK_NATIVE") == "1"
if not NATIVE:
    nofrag.torch.enable()
import torch  # noqa: E402

if torch.cuda.device_count() < 2:
    print("peer_check: skipped (fewer than two GPUs)")
    sys.exit(0)

failures = []


def check(what, fn):
    try:
        ok = bool(fn())
        detail = ""
    except Exception as exc:  # noqa: BLE001: a failed copy is a finding, not a crash
        ok, detail = False, f" ({type(exc).__name__}: {str(exc)[:200]})"
    print(("ok   " if ok else "FAIL ") + what + detail)
    if not ok:
        failures.append(what)


def same(x, y):
    return torch.equal(x.cpu(), y.cpu())


d0, d1 = torch.device("cuda:0"), torch.device("cuda:1")
big = torch.arange(1 << 24, dtype=torch.int32, device=d0)  # 64 MiB: many pages
small = torch.randn(1000, device=d0)                         # part of one page
check("64 MiB cuda:0 -> cuda:1", lambda: same(big.to(d1), big))
check("4 KB cuda:0 -> cuda:1", lambda: same(small.to(d1), small))
check("64 MiB cuda:1 -> cuda:0", lambda: same(big.to(d1).to(d0), big))


def non_blocking():
    out = big.to(d1, non_blocking=True)
    torch.cuda.synchronize(d0)
    torch.cuda.synchronize(d1)
    return same(out, big)


check("64 MiB cuda:0 -> cuda:1, non_blocking", non_blocking)


def into_existing():
    dst = torch.zeros(1 << 24, dtype=torch.int32, device=d1)
    dst.copy_(big)
    src = torch.full((1 << 24,), 7, dtype=torch.int32, device=d1)
    big0 = torch.empty(1 << 24, dtype=torch.int32, device=d0)
    big0.copy_(src)
    return same(dst, big) and bool((big0 == 7).all())


check("copy_ into existing tensors, both ways", into_existing)


def split_model():
    torch.manual_seed(0)
    a = torch.nn.Linear(1024, 4096)
    b = torch.nn.Linear(4096, 1024)
    x = torch.randn(64, 1024)
    results = []
    for first, second in ((d0, d0), (d0, d1)):
        la, lb = torch.nn.Linear(1024, 4096).to(first), torch.nn.Linear(4096, 1024).to(second)
        la.load_state_dict(a.state_dict())
        lb.load_state_dict(b.state_dict())
        h = torch.relu(la(x.to(first)))
        y = lb(h.to(second))
        y.square().mean().backward()
        results.append((y.detach().cpu(), la.weight.grad.cpu(), lb.weight.grad.cpu()))
    (y0, ga0, gb0), (y1, ga1, gb1) = results
    return torch.allclose(y0, y1, atol=1e-5) and torch.allclose(ga0, ga1, atol=1e-5) and torch.allclose(gb0, gb1, atol=1e-5)


check("two layers split over cuda:0 and cuda:1: forward and backward as on one device", split_model)
if not NATIVE:
    for dev in (0, 1):
        st = nofrag.stats(dev)
        print(f"     cuda:{dev} pool: live {st.get('allocated_bytes.all.current')} held {st.get('reserved_bytes.all.current')}")
    nofrag.check_pools()
print("peer_check:", "PASSED" if not failures else f"FAILED ({len(failures)}: {', '.join(failures)})")
sys.exit(1 if failures else 0)
