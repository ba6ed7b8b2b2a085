"""nofrag.phase() on a real job: GPT-2 small trained for 10 steps (batch 8 x 512 tokens), then an
evaluation pass at four times the batch under torch.no_grad() and a generation-style forward at
long sequence, then 10 more training steps; once with the evaluation inside `with nofrag.phase():`
and once without.

  python3 gpu/phase_check.py phase|plain

Prints held memory (GiB) before the evaluation, after it, and at the end, the live peaks of the
training steps and of the evaluation, pages created after the evaluation, and the losses
(deterministic algorithms: the same in both runs, a phase changes no byte). "phase_check MODE:
PASSED" when, with the phase, held memory right after it is no more than before it plus 2% of the
training peak, and at the end no more than the growth allowance above the training peak (1.02x
and a page): the evaluation's memory is not kept. (The steps after it may still make pages up to
that allowance, as they would have had the pool not reached it before the phase.) The plain run
only reports."""
import json
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "python"))
import nofrag  # noqa: E402
import nofrag.torch  # noqa: E402

mode = sys.argv[1] if len(sys.argv) > 1 else "phase"
if mode not in ("phase", "plain"):
    raise SystemExit(__doc__)
nofrag.torch.enable()
import contextlib  # noqa: E402

os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
import torch  # noqa: E402
from transformers import GPT2Config, GPT2LMHeadModel  # noqa: E402

torch.manual_seed(0)
torch.use_deterministic_algorithms(True)
GIB = 2 ** 30
model = GPT2LMHeadModel(GPT2Config(n_layer=12, n_embd=768, n_head=12, n_positions=1024)).cuda()
opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
losses = []


def train(steps):
    for _ in range(steps):
        x = torch.randint(0, 50257, (8, 512), device="cuda")
        loss = model(x, labels=x).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        losses.append(loss.item())
        nofrag.step()


def held():
    return nofrag.stats()["reserved_bytes.current"]


train(10)
torch.cuda.synchronize()
train_peak = nofrag.stats()["allocated_bytes.peak"]
before = held()
nofrag.reset_peak_stats()
scope = nofrag.phase() if mode == "phase" else contextlib.nullcontext({})
with scope as released, torch.no_grad():
    for _ in range(3):
        x = torch.randint(0, 50257, (32, 512), device="cuda")
        losses.append(model(x, labels=x).loss.item())
    x = torch.randint(0, 50257, (16, 1024), device="cuda")
    losses.append(model(x, labels=x).loss.item())
    del x
eval_peak = nofrag.stats()["allocated_bytes.peak"]
after = held()
created_before = nofrag.stats()["calls_page_create"]
train(10)
torch.cuda.synchronize()
created = nofrag.stats()["calls_page_create"] - created_before
end = held()
print(json.dumps({"mode": mode, "train_live_peak_gib": train_peak / GIB, "eval_live_peak_gib": eval_peak / GIB,
                  "held_before_gib": before / GIB, "held_after_gib": after / GIB, "held_end_gib": end / GIB,
                  "released_gib": {d: b / GIB for d, b in released.items()}, "pages_created_after": created,
                  "losses": [float.hex(v) for v in losses]}))
nofrag.check_pools()
ok = mode == "plain" or (after <= before + train_peak * 0.02 and end <= train_peak * 1.02 + 2 ** 21)
print(f"phase_check {mode}: {'PASSED' if ok else 'FAILED'}")
sys.exit(0 if ok else 1)
