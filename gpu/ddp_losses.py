"""DDP or FSDP under torchrun with nofrag in every process: a small GPT-2 trained for 30 steps on
all GPUs of the machine, deterministic; rank 0 writes the losses. Run once per allocator and
compare with compare_losses.py. FSDP shards each transformer block (its all-gathers run on a
stream of their own, so blocks cross streams). fsdp2 does the same with PyTorch's per-parameter
sharding (`fully_shard`), which orders its streams with events and keeps collective buffers alive
itself instead of calling record_stream: a different way for memory to cross streams. tp splits
a small transformer of its own (written here with nn.Linear, which PyTorch's tensor parallelism
takes) Megatron-style over all GPUs: query, key, value and the first feed-forward layer by
columns, the attention output and the second feed-forward layer by rows, so every block
all-reduces its activations twice forward and twice backward through functional collectives; all
ranks see the same batch.

usage: torchrun --nproc_per_node=N gpu/ddp_losses.py native|nofrag|record OUT.json [ddp|fsdp|fsdp2|tp] [STEPS]
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
if wrapper not in ("ddp", "fsdp", "fsdp2", "tp"):
    raise SystemExit("the wrapper is ddp, fsdp, fsdp2 or tp")
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



class TpBlock(torch.nn.Module):
    """A pre-norm transformer block of plain nn.Linear layers. Heads are counted from the width
    the projections return, so the block runs whole or with its projections split by columns."""

    def __init__(self, width, head_width):
        super().__init__()
        self.head_width = head_width
        self.norm1, self.norm2 = torch.nn.LayerNorm(width), torch.nn.LayerNorm(width)
        self.query, self.key, self.value, self.out = (torch.nn.Linear(width, width) for _ in range(4))
        self.up, self.down = torch.nn.Linear(width, 4 * width), torch.nn.Linear(4 * width, width)

    def forward(self, x):
        batch, length, _ = x.shape
        h = self.norm1(x)
        q, k, v = (f(h).view(batch, length, -1, self.head_width).transpose(1, 2)
                   for f in (self.query, self.key, self.value))
        scores = q @ k.transpose(-1, -2) / self.head_width ** 0.5
        causal = torch.ones(length, length, dtype=torch.bool, device=x.device).triu(1)
        attended = scores.masked_fill(causal, float("-inf")).softmax(-1) @ v
        x = x + self.out(attended.transpose(1, 2).reshape(batch, length, -1))
        return x + self.down(torch.nn.functional.gelu(self.up(self.norm2(x))))


class TpModel(torch.nn.Module):
    def __init__(self, vocab, width=512, layers=4, head_width=64):
        super().__init__()
        self.embed = torch.nn.Embedding(vocab, width)
        self.blocks = torch.nn.ModuleList(TpBlock(width, head_width) for _ in range(layers))
        self.norm, self.head = torch.nn.LayerNorm(width), torch.nn.Linear(width, vocab, bias=False)

    def forward(self, input_ids, labels):
        h = self.embed(input_ids)
        for block in self.blocks:
            h = block(h)
        logits = self.head(self.norm(h))[:, :-1].float()
        return torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels[:, 1:].reshape(-1))


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
elif wrapper == "tp":
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.tensor.parallel import ColwiseParallel, RowwiseParallel, parallelize_module
    model = TpModel(cfg.vocab_size).cuda()
    mesh = init_device_mesh("cuda", (world,))
    plan = {"query": ColwiseParallel(), "key": ColwiseParallel(), "value": ColwiseParallel(),
            "out": RowwiseParallel(), "up": ColwiseParallel(), "down": RowwiseParallel()}
    for block in model.blocks:
        parallelize_module(block, mesh, plan)
else:
    from torch.distributed.fsdp import FullyShardedDataParallel
    from torch.distributed.fsdp.wrap import ModuleWrapPolicy
    from transformers.models.gpt2.modeling_gpt2 import GPT2Block
    model = FullyShardedDataParallel(GPT2LMHeadModel(cfg), auto_wrap_policy=ModuleWrapPolicy({GPT2Block}),
                                     device_id=local)
# Tensor parallelism leaves some parameters plain tensors and makes others DTensors; the fused
# multi-tensor (foreach) update refuses such a mix, so it updates them one by one.
opt = torch.optim.AdamW(model.parameters(), lr=3e-4, foreach=False if wrapper == "tp" else None)
gen = torch.Generator().manual_seed(100 if wrapper == "tp" else 100 + rank)  # tensor parallel: one batch
losses = []
timed_from = 5  # steps before this one warm up (NCCL, cuBLAS, first pages)
for step in range(steps):
    if recorder:
        recorder.step()
    if step == timed_from:
        torch.cuda.synchronize()
        start = time.time()
        at_timed = nofrag.stats() if mode == "nofrag" else None
    length = int(torch.randint(32, 257, (1,), generator=gen))
    x = torch.randint(0, cfg.vocab_size, (4, length), generator=gen).cuda()
    loss = model(input_ids=x, labels=x)
    loss = loss if wrapper == "tp" else loss.loss
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
if at_timed:
    # What nofrag's driver calls cost inside the timed steps (host waits included), to set against
    # seconds_per_step: the first steps' page creation is left out, as it is of the step time.
    now = nofrag.stats()
    for key in ("backend_ns", "event_wait_ns", "backend_calls", "num_remaps"):
        stats[f"{key}_per_timed_step"] = round((now[key] - at_timed[key]) / (steps - timed_from), 1)
if recorder:
    stats["recorded"] = recorder.stop()
gathered = [None] * world
dist.all_gather_object(gathered, stats)
if rank == 0:
    json.dump({"mode": mode, "wrapper": wrapper, "steps": steps, "losses": losses, "world": world, "stats": gathered,
               "too_late_error": None}, open(out_path, "w"))
    print(mode, wrapper, "world", world, "final loss", float.fromhex(losses[-1]), gathered)
dist.destroy_process_group()
