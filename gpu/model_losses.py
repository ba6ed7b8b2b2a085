"""Trains a job of gpu/workloads_more.py (ResNet-50 multi-scale, T5 with beam search) with
deterministic algorithms and prints every loss and evaluation checksum exactly (float.hex). Run
once with PyTorch's native allocator and once under nofrag: the results must be identical.

usage: python3 gpu/model_losses.py JOB native|nofrag OUT.json [STEPS]
Under `nofrag`, NOFRAG_* variables apply (NOFRAG_CAPACITY=... for a tight cap).
"""
import json
import os
import random
import sys
import time

os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
job, mode, out_path = sys.argv[1], sys.argv[2], sys.argv[3]
steps = int(sys.argv[4]) if len(sys.argv) > 4 else 24
here = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(here, "..", "python"))
sys.path.insert(0, here)
if mode == "nofrag":
    import nofrag.torch
    nofrag.torch.enable()
elif mode != "native":
    raise SystemExit("mode must be native or nofrag")
import torch  # noqa: E402
import workloads_more  # noqa: E402
from loss_stats import allocator_stats  # noqa: E402

if job not in workloads_more.JOBS:
    raise SystemExit(f"unknown job {job}; known: {', '.join(workloads_more.JOBS)}")
torch.manual_seed(0)
random.seed(0)
torch.use_deterministic_algorithms(True)
torch.backends.cudnn.benchmark = False
results = []
start = time.time()
step_starts = []
FIRST_COUNTED_STEP = 4  # per-step figures average the steps after step 3, as `nofrag replay` does
PER_STEP_KEYS = ("num_remaps", "backend_calls", "backend_ns", "event_wait_ns")  # nofrag counters averaged so
counted_from = {}


def step_hook(step):
    # Step times (synchronised at each step start, under both allocators alike): the steady state,
    # apart from the first steps' page creation.
    torch.cuda.synchronize()
    step_starts.append(time.time())
    if mode == "nofrag" and step:
        nofrag.step()
    if mode == "nofrag" and step == FIRST_COUNTED_STEP:
        st = nofrag.stats()
        counted_from.update({key: st[key] for key in PER_STEP_KEYS})


workloads_more.JOBS[job](steps, torch.device("cuda"), step_hook, results)
torch.cuda.synchronize()
step_starts.append(time.time())
durations = sorted(b - a for a, b in zip(step_starts[3:], step_starts[4:]))
result = {"job": job, "mode": mode, "steps": steps, "seconds": round(time.time() - start, 2),
          "losses": [float(r.float().item()).hex() for r in results]}
result["result_count"] = len(result["losses"])
result["stats"] = allocator_stats(mode)
result["stats"]["median_step_seconds"] = round(durations[len(durations) // 2], 5) if durations else None
if counted_from:
    counted_steps = steps - FIRST_COUNTED_STEP
    for key in PER_STEP_KEYS:
        result["stats"][key + "_per_step_after_step_3"] = round(
            (result["stats"][key] - counted_from[key]) / counted_steps, 2)
with open(out_path, "w") as f:
    json.dump(result, f)
print(job, mode, f"{result['result_count']} results, last {float.fromhex(result['losses'][-1])}",
      f"time {result['seconds']} s", result["stats"])
