"""How much PyTorch's memory history slows a job: the median step time of a gpu/workloads_more.py
job without it, with it on as the recordings here were made (gpu/record.sh: every allocation
event, Python stacks), and without it again, in one process. `nofrag replay` divides its
estimated driver time by the recorded steps' duration (driver_share_of_step); this says by how
much that duration overstates the job's own steps, job by job.

usage: python3 gpu/recording_overhead.py JOB[:STEPS] ... (12 steps unless given; prints one JSON
line a job: median step ms without, with, without again, and with / mean of without)
"""
import json
import os
import random
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import torch  # noqa: E402
import workloads_more  # noqa: E402

FIRST_COUNTED_STEP = 4  # as `nofrag replay`: the steps after step 3


def median_step_ms(job, steps, record):
    torch.manual_seed(0)
    random.seed(0)
    starts = []

    def mark(step):
        torch.cuda.synchronize()
        starts.append(time.time())

    if record:
        torch.cuda.memory._record_memory_history(enabled="all", context=None, stacks="python",
                                                 max_entries=4_000_000)
    workloads_more.JOBS[job](steps, torch.device("cuda"), mark)
    torch.cuda.synchronize()
    starts.append(time.time())
    if record:
        torch.cuda.memory._record_memory_history(enabled=None)
    durations = sorted(b - a for a, b in zip(starts[FIRST_COUNTED_STEP - 1:], starts[FIRST_COUNTED_STEP:]))
    torch.cuda.empty_cache()
    return 1000 * durations[len(durations) // 2]


for spec in sys.argv[1:]:
    job, _, steps = spec.partition(":")
    steps = int(steps or 12)
    plain, recorded, plain_again = (median_step_ms(job, steps, r) for r in (False, True, False))
    print(json.dumps({"job": job, "steps": steps, "plain_ms": round(plain, 2), "recorded_ms": round(recorded, 2),
                      "plain_again_ms": round(plain_again, 2),
                      "recorded_over_plain": round(recorded / ((plain + plain_again) / 2), 3)}), flush=True)
