"""100 GPT-2 training steps with deterministic algorithms, printing each loss exactly (float.hex).
Run once with PyTorch's native allocator and once under nofrag: the losses must be identical.

usage: python3 gpt2_losses.py native|nofrag OUT.json [STEPS]
Under `nofrag`, NOFRAG_* variables apply (NOFRAG_CAPACITY=... for a tight cap).
"""
import json
import os
import sys
import time

os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
mode, out_path = sys.argv[1], sys.argv[2]
steps = int(sys.argv[3]) if len(sys.argv) > 3 else 100
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "python"))
if mode == "nofrag":
    import nofrag.torch
    nofrag.torch.enable()
import torch  # noqa: E402
from loss_stats import allocator_stats  # noqa: E402  (gpu/, the script's own folder)
from transformers import GPT2Config, GPT2LMHeadModel  # noqa: E402

if mode == "nofrag":
    # It is too late now that CUDA is initialised: enable() must refuse clearly.
    torch.zeros(1, device="cuda")
    nofrag.torch._enabled = False
    try:
        nofrag.torch.enable()
        too_late = "no error"
    except RuntimeError as e:
        too_late = str(e)
    nofrag.torch._enabled = True
else:
    too_late = None

torch.manual_seed(0)
torch.use_deterministic_algorithms(True)
torch.backends.cudnn.benchmark = False
cfg = GPT2Config(n_layer=12, n_embd=768, n_head=12, n_positions=1024)
cfg._attn_implementation = "eager"  # plain matmul attention: deterministic in backward
model = GPT2LMHeadModel(cfg).cuda()
opt = torch.optim.AdamW(model.parameters(), lr=3e-4)
gen = torch.Generator().manual_seed(1234)
losses = []
t0 = time.time()
for step in range(steps):
    length = int(torch.randint(64, 513, (1,), generator=gen))
    x = torch.randint(0, cfg.vocab_size, (8, length), generator=gen).cuda()
    with torch.autocast("cuda", dtype=torch.bfloat16):
        loss = model(input_ids=x, labels=x).loss
    loss.backward()
    opt.step()
    opt.zero_grad(set_to_none=True)
    losses.append(float(loss.item()).hex())
    if mode == "nofrag":
        nofrag.step()
torch.cuda.synchronize()
result = {"mode": mode, "steps": steps, "losses": losses, "seconds": round(time.time() - t0, 2),
          "too_late_error": too_late}
result["stats"] = allocator_stats(mode)
json.dump(result, open(out_path, "w"))
print(mode, "final loss", float.fromhex(losses[-1]), "time", result["seconds"], "s", result["stats"])
