"""DDP or FSDP under torchrun with nofrag in every process: a small GPT-2 trained for 30 steps on
all GPUs of the machine, deterministic; rank 0 writes the losses. Run once per allocator and
compare with compare_losses.py. FSDP shards each transformer block (its all-gathers run on a
stream of their own, so blocks cross streams). fsdp2 does the same with PyTorch's per-parameter
sharding (`fully_shard`), which orders its streams with events and keeps collective buffers alive
itself instead of calling record_stream: a different way for memory to cross streams.

usage: torchrun --nproc_per_node=N gpu/ddp_losses.py native|nofrag|record OUT.json [ddp|fsdp|fsdp2] [STEPS]
record: PyTorch's allocator, and each rank records its allocations with nofrag.record into
OUT_rankR.csv.gz / .steps (OUT.json less ".json"), for `nofrag replay`.
"""
import json
import os
import sys
import time

os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
mode, out_path = sys.argv[1], sys.argv[2]
wrapper = sys.argv[3] if len(sys.argv) > 3 else "ddp"
steps = int(sys.argv[4]) if len(sys.argv) > 4 else 30
if wrapper not in ("ddp", "fsdp", "fsdp2"):
    raise SystemExit("the wrapper is ddp, fsdp or fsdp2")
if mode not in ("native", "nofrag", "record"):
    raise SystemExit("the mode is native, nofrag or record")
here = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(here, "..", "python"))
sys.path.insert(0, here)
if mode == "nofrag":
    import nofrag.torch
    if os.environ.get("DDP_LOSSES_SKIP_RECORD_STREAM_CALLBACK") == "1":
        # Diagnostic (gpu/fsdp_repeat.sh): leave PyTorch's C++ record-stream callback unset, as
        # before it was hooked, so NCCL's stream uses of collective tensors never reach nofrag.
        nofrag.torch._hook_record_stream = lambda allocator, library: False
    nofrag.torch.enable()
import torch  # noqa: E402
import torch.distributed as dist  # noqa: E402
from loss_stats import allocator_stats  # noqa: E402
from transformers import GPT2Config, GPT2LMHeadModel  # noqa: E402

rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
local = int(os.environ["LOCAL_RANK"])
torch.cuda.set_device(local)
recorder = None
if mode == "record":
    import nofrag.record
    recorder = nofrag.record.Recorder(f"{out_path[:-5] if out_path.endswith('.json') else out_path}_rank{rank}")
    recorder.start()
dist.init_process_group("nccl")
torch.manual_seed(0)
torch.use_deterministic_algorithms(True)
cfg = GPT2Config(n_layer=4, n_embd=512, n_head=8, n_positions=512)
cfg._attn_implementation = "eager"
if wrapper == "ddp":
    model = torch.nn.parallel.DistributedDataParallel(GPT2LMHeadModel(cfg).cuda(), device_ids=[local])
elif wrapper == "fsdp2":
    try:
        from torch.distributed.fsdp import fully_shard
    except ImportError:  # PyTorch before 2.6 kept it here
        from torch.distributed._composable.fsdp import fully_shard
    model = GPT2LMHeadModel(cfg).cuda()
    for block in model.transformer.h:
        fully_shard(block)
    fully_shard(model)
else:
    from torch.distributed.fsdp import FullyShardedDataParallel
    from torch.distributed.fsdp.wrap import ModuleWrapPolicy
    from transformers.models.gpt2.modeling_gpt2 import GPT2Block
    model = FullyShardedDataParallel(GPT2LMHeadModel(cfg), auto_wrap_policy=ModuleWrapPolicy({GPT2Block}),
                                     device_id=local)
opt = torch.optim.AdamW(model.parameters(), lr=3e-4)
gen = torch.Generator().manual_seed(100 + rank)
losses = []
timed_from = 5  # steps before this one warm up (NCCL, cuBLAS, first pages)
for step in range(steps):
    if recorder:
        recorder.step()
    if step == timed_from:
        torch.cuda.synchronize()
        start = time.time()
    length = int(torch.randint(32, 257, (1,), generator=gen))
    x = torch.randint(0, cfg.vocab_size, (4, length), generator=gen).cuda()
    loss = model(input_ids=x, labels=x).loss
    loss.backward()
    opt.step()
    opt.zero_grad(set_to_none=True)
    reduced = loss.detach().clone()
    dist.all_reduce(reduced)
    losses.append(float(reduced.item()).hex())
    if mode == "nofrag":
        nofrag.step()
torch.cuda.synchronize()
stats = allocator_stats("nofrag" if mode == "nofrag" else "native")
stats["seconds_per_step"] = round((time.time() - start) / (steps - timed_from), 5)
if recorder:
    stats["recorded"] = recorder.stop()
gathered = [None] * world
dist.all_gather_object(gathered, stats)
if rank == 0:
    json.dump({"mode": mode, "wrapper": wrapper, "steps": steps, "losses": losses, "world": world, "stats": gathered,
               "too_late_error": None}, open(out_path, "w"))
    print(mode, wrapper, "world", world, "final loss", float.fromhex(losses[-1]), gathered)
dist.destroy_process_group()
