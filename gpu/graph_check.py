"""CUDA graphs under nofrag, on a real GPU: what a user who captures a graph gets.

  python3 gpu/graph_check.py probe      which graph-pool hooks this PyTorch's pluggable allocator has
  python3 gpu/graph_check.py capture    torch.cuda.graph: capture, then replay while other tensors
                                        are made, filled and freed; checks the graph's output and
                                        that no other tensor's bytes changed
  python3 gpu/graph_check.py compile    torch.compile(mode="reduce-overhead") against eager
  python3 gpu/graph_check.py others     torch.cuda.make_graphed_callables and torch.cuda.MemPool
  python3 gpu/graph_check.py train      a whole training step (forward, backward, Adam) captured
                                        once, replayed 20 times against eager steps

GRAPH_CHECK_NATIVE=1 runs the same under PyTorch's own allocator. Each mode runs in its own process
(a failed capture can leave CUDA unusable). Prints one line per finding and "graph_check MODE:
PASSED" or "graph_check MODE: FAILED ..."; exits 1 on a failure. nofrag gives each graph private
pools where PyTorch lets it hear a capture's end and a pool's release; its refusal where PyTorch
does not, and PyTorch's own refusal of a pluggable allocator, count as passed. What must never
happen is a graph replay that writes into memory nofrag has handed to another tensor, or a wrong
result. capture also checks a second graph sharing the first one's pool, and that the graphs'
pools are gone after the graphs are deleted and torch.cuda.empty_cache() runs."""
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "python"))
import nofrag.torch  # noqa: E402

MODE = sys.argv[1] if len(sys.argv) > 1 else "capture"
NATIVE = os.environ.get("GRAPH_CHECK_NATIVE") == "1"  # the same checks under PyTorch's allocator
if not NATIVE:
    nofrag.torch.enable()
import torch  # noqa: E402
import nofrag  # noqa: E402


def done(ok, why=""):
    print(f"graph_check {MODE}: {'PASSED' if ok else 'FAILED'} {why}".rstrip())
    sys.exit(0 if ok else 1)


def refused(exc):
    """True if the exception is a clear refusal: nofrag's, or PyTorch's own for a pluggable
    allocator ("... does not yet support ...")."""
    text = str(exc)
    print("raised:", type(exc).__name__, text[:300].replace("\n", " "))
    return "does not let nofrag hear" in text or "does not yet support" in text


def fill_others(n, seed):
    """Tensors made after capture: each filled with its own value, so any overwrite shows."""
    out = []
    for i in range(n):
        t = torch.empty((1 + (i * 7919 + seed) % 13) << 18, dtype=torch.int32, device="cuda")
        t.fill_(1000 * seed + i)
        out.append(t)
    return out


def others_intact(others, seed):
    return all(bool((t == 1000 * seed + i).all()) for i, t in enumerate(others))


if MODE == "probe":
    alloc = torch.cuda.memory.CUDAPluggableAllocator
    print("torch", torch.__version__)
    print("CUDAPluggableAllocator setters:", sorted(a for a in dir(alloc) if "set" in a or "pool" in a.lower()))
    native = torch._C._cuda_getAllocator() if hasattr(torch._C, "_cuda_getAllocator") else None
    print("native allocator object:", type(native).__name__,
          sorted(a for a in dir(native) if not a.startswith("__")) if native is not None else "-")
    print("MemPool:", hasattr(torch.cuda, "MemPool"), "use_mem_pool:", hasattr(torch.cuda, "use_mem_pool"))
    done(True)

if MODE == "capture":
    torch.manual_seed(0)
    w = torch.randn(1024, 1024, device="cuda")
    x = torch.randn(64, 1024, device="cuda")
    expect = torch.relu(x @ w) @ w.t()
    torch.cuda.synchronize()
    g = torch.cuda.CUDAGraph()
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    try:
        with torch.cuda.stream(stream):  # warm up on the side stream, as PyTorch's docs ask
            for _ in range(3):
                torch.relu(x @ w) @ w.t()
        torch.cuda.current_stream().wait_stream(stream)
        with torch.cuda.graph(g):
            h = torch.relu(x @ w)  # an intermediate freed inside the capture
            y = h @ w.t()
            del h
    except Exception as exc:  # noqa: BLE001: any refusal is reported
        clear = refused(exc)
        # After a refusal the process goes on: eager work on the same stream, the pool's invariants.
        with torch.cuda.stream(stream):
            z = torch.relu(x @ w) @ w.t()
        torch.cuda.synchronize()
        usable = torch.allclose(z, expect, rtol=1e-3, atol=1e-3)
        if not NATIVE:
            nofrag.check_pools()
        print("eager work after the refusal:", "correct" if usable else "WRONG")
        done(clear and usable, "(capture refused)")
    torch.cuda.synchronize()
    if not NATIVE:
        print("captured; stats:", {k: v for k, v in nofrag.stats().items() if k in ("allocated_bytes.all.current", "reserved_bytes.all.current", "num_remaps")})
    bad_out = bad_others = 0
    for seed in range(1, 6):
        others = fill_others(40, seed)
        x.copy_(torch.randn(64, 1024, device="cuda"))
        expect = torch.relu(x @ w) @ w.t()
        g.replay()
        torch.cuda.synchronize()
        bad_out += not torch.allclose(y, expect, rtol=1e-3, atol=1e-3)
        bad_others += not others_intact(others, seed)
        del others
        if not NATIVE:
            nofrag.trim()  # idle pages back to the driver: the worst case
    print(f"replays with a wrong output: {bad_out} of 5; replays that changed another tensor: {bad_others} of 5")
    # A second graph in the first one's pool (how graphs of several batch sizes are usually kept),
    # replayed in turn with the first.
    g2 = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g2, pool=g.pool()):
        h2 = torch.tanh(x @ w)
        y2 = h2 @ w
        del h2
    bad_shared = 0
    for seed in range(6, 9):
        others = fill_others(40, seed)
        x.copy_(torch.randn(64, 1024, device="cuda"))
        want1, want2 = torch.relu(x @ w) @ w.t(), torch.tanh(x @ w) @ w
        g.replay()
        out1 = y.clone()
        g2.replay()
        torch.cuda.synchronize()
        bad_shared += not (torch.allclose(out1, want1, rtol=1e-3, atol=1e-3) and
                           torch.allclose(y2, want2, rtol=1e-3, atol=1e-3) and others_intact(others, seed))
        del others
    print(f"two graphs sharing a pool: {bad_shared} of 3 rounds wrong")
    released = True
    if not NATIVE:
        nofrag.check_pools()
        held = {k: nofrag.stats()[k] for k in ("graph_pools", "graph_reserved_bytes", "graph_allocated_bytes")}
        print("graph pools while the graphs live:", held)
        del g, g2, y, y2
        # cuBLAS's workspace for the capture stream was allocated during the capture, so it sits
        # in the graph's pool, and PyTorch keeps it until its workspaces are cleared.
        clear = getattr(torch._C, "_cuda_clearCublasWorkspaces", None)
        if clear:
            clear()
        torch.cuda.empty_cache()
        after = {k: nofrag.stats()[k] for k in ("graph_pools", "graph_reserved_bytes", "graph_allocated_bytes")}
        print("after the graphs are deleted and empty_cache:", after)
        released = held["graph_pools"] > 0 and after["graph_pools"] == 0 and after["graph_reserved_bytes"] == 0
        nofrag.check_pools()
    done(bad_out == 0 and bad_others == 0 and bad_shared == 0 and released)

if MODE == "compile":
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(512, 2048), torch.nn.GELU(), torch.nn.Linear(2048, 512)).cuda()
    try:
        compiled = torch.compile(model, mode="reduce-overhead")
        bad_out = bad_others = 0
        for seed in range(1, 8):
            x = torch.randn(32, 512, device="cuda")
            with torch.no_grad():
                got = compiled(x).clone()
                want = model(x)
            others = fill_others(20, seed)
            with torch.no_grad():
                compiled(torch.randn(32, 512, device="cuda"))
            torch.cuda.synchronize()
            bad_out += not torch.allclose(got, want, rtol=1e-2, atol=1e-2)
            bad_others += not others_intact(others, seed)
            del others
    except Exception as exc:  # noqa: BLE001
        done(refused(exc), "(refused)")
    print(f"calls with a wrong output: {bad_out} of 7; calls that changed another tensor: {bad_others} of 7")
    done(bad_out == 0 and bad_others == 0)

if MODE == "others":
    # make_graphed_callables captures through torch.cuda.graph; a MemPool routes allocations to a
    # private pool through the same hook. Each must be refused, or, if it goes through, give
    # results equal to eager's with no other tensor changed.
    ok = True
    model = torch.nn.Linear(256, 256).cuda()
    x = torch.randn(8, 256, device="cuda", requires_grad=True)
    try:
        graphed = torch.cuda.make_graphed_callables(model, (x,))
        good = True
        for seed in range(1, 4):  # forward and backward replayed, against eager
            others = fill_others(20, seed)
            x_eager = torch.randn(8, 256, device="cuda", requires_grad=True)
            x_graph = x_eager.detach().clone().requires_grad_(True)
            out_graph = graphed(x_graph)
            out_graph.square().sum().backward()
            out_eager = model(x_eager)
            out_eager.square().sum().backward()
            torch.cuda.synchronize()
            good &= torch.allclose(out_graph, out_eager, rtol=1e-4, atol=1e-4)
            good &= torch.allclose(x_graph.grad, x_eager.grad, rtol=1e-4, atol=1e-4)
            good &= others_intact(others, seed)
        print("make_graphed_callables went through;", "results correct (forward, backward, 3 rounds)" if good else "WRONG results")
        ok &= good
    except Exception as exc:  # noqa: BLE001
        ok &= refused(exc)
    if hasattr(torch.cuda, "MemPool"):
        try:
            pool = torch.cuda.MemPool()
            with torch.cuda.use_mem_pool(pool):
                t = torch.ones(1 << 20, device="cuda")
            good = bool((t == 1).all())
            print("MemPool went through;", "results correct" if good else "WRONG results")
            ok &= good
        except Exception as exc:  # noqa: BLE001
            ok &= refused(exc)
    torch.cuda.synchronize()
    done(ok)

if MODE == "train":
    # A whole training step captured once and replayed (PyTorch's documented "whole network
    # capture": static input and target, forward, backward and a capturable Adam step in the
    # graph), against the same steps run eagerly on a copy of the model: losses and weights must
    # agree, and tensors made between replays must keep their bytes.
    torch.manual_seed(0)
    def make():
        return torch.nn.Sequential(torch.nn.Linear(512, 2048), torch.nn.GELU(), torch.nn.LayerNorm(2048),
                                   torch.nn.Linear(2048, 512)).cuda()
    model, eager_model = make(), make()
    eager_model.load_state_dict(model.state_dict())
    opt = torch.optim.Adam(model.parameters(), lr=1e-3, capturable=True)
    eager_opt = torch.optim.Adam(eager_model.parameters(), lr=1e-3, capturable=True)
    data = [(torch.randn(64, 512, device="cuda"), torch.randn(64, 512, device="cuda")) for _ in range(20)]
    static_x, static_t = data[0][0].clone(), data[0][1].clone()
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):  # warm-up steps on a side stream, as PyTorch's docs ask
        for _ in range(3):
            opt.zero_grad(set_to_none=True)
            torch.nn.functional.mse_loss(model(static_x), static_t).backward()
            opt.step()
    torch.cuda.current_stream().wait_stream(side)
    # The eager twin takes the same warm-up steps.
    for _ in range(3):
        eager_opt.zero_grad(set_to_none=True)
        torch.nn.functional.mse_loss(eager_model(static_x), static_t).backward()
        eager_opt.step()
    g = torch.cuda.CUDAGraph()
    opt.zero_grad(set_to_none=True)
    with torch.cuda.graph(g):
        static_loss = torch.nn.functional.mse_loss(model(static_x), static_t)
        static_loss.backward()
        opt.step()
    worst = 0.0
    bad_others = 0
    for step, (x, t) in enumerate(data):
        others = fill_others(10, step + 1)
        static_x.copy_(x)
        static_t.copy_(t)
        g.replay()
        eager_opt.zero_grad(set_to_none=True)
        eager_loss = torch.nn.functional.mse_loss(eager_model(x), t)
        eager_loss.backward()
        eager_opt.step()
        torch.cuda.synchronize()
        worst = max(worst, abs(float(static_loss) - float(eager_loss)) / max(abs(float(eager_loss)), 1e-12))
        bad_others += not others_intact(others, step + 1)
        del others
    weights_close = all(torch.allclose(a, b, rtol=1e-3, atol=1e-5)
                        for a, b in zip(model.parameters(), eager_model.parameters()))
    print(f"20 replayed training steps: largest relative loss difference to eager {worst:.2e}, "
          f"weights {'close' if weights_close else 'APART'}, {bad_others} steps changed another tensor")
    if not NATIVE:
        nofrag.check_pools()
        print("graph pools:", {k: nofrag.stats()[k] for k in ("graph_pools", "graph_reserved_bytes", "graph_allocated_bytes")})
    done(worst < 1e-3 and weights_close and bad_others == 0)

done(False, f"unknown mode {MODE}")
