"""torch.compile under nofrag: a small MLP, forward and backward, eager then compiled (MODE, default
"default"; "max-autotune-no-cudagraphs" benchmarks kernels first and takes minutes; modes with
CUDA graphs need private pools, which a pluggable allocator lacks). Prints whether the loss
and a gradient match eager's, and exits 1 on a failed check.
usage: NOFRAG_LIBRARY=build-gpu/libnofrag.so [MODE=...] python3 gpu/compile_check.py"""
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "python"))
import nofrag.torch  # noqa: E402

nofrag.torch.enable()
import nofrag  # noqa: E402
import torch  # noqa: E402

t0 = time.time()
torch.manual_seed(0)
m = torch.nn.Sequential(torch.nn.Linear(1024, 4096), torch.nn.GELU(), torch.nn.Linear(4096, 1024)).cuda()
x = torch.randn(256, 1024, device="cuda")
eager = m(x).square().mean()
eager.backward()
g_eager = m[0].weight.grad.clone()
m.zero_grad(set_to_none=True)
mode = os.environ.get("MODE", "default")
cm = torch.compile(m, mode=mode)
out = cm(x).square().mean()
out.backward()
same_loss = abs(out.item() - eager.item()) < 1e-4
same_grad = torch.allclose(g_eager, m[0].weight.grad, atol=1e-4)
print(f"compile {mode}: loss equal within 1e-4: {same_loss}, grad close: {same_grad}, {time.time() - t0:.1f} s")
print("memory_allocated", torch.cuda.memory_allocated(), "max", torch.cuda.max_memory_allocated())
nofrag.check_pools()
print("compile_check:", "PASSED" if same_loss and same_grad else "FAILED")
sys.exit(0 if same_loss and same_grad else 1)
