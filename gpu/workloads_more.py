"""More training jobs to record, of kinds the placement policy was never looked at with.

usage: python3 gpu/workloads_more.py NAME STEPS OUTDIR [--record]
Writes the same files as the shared recording script (.rec/workloads.py), so gpu/record.sh and
gpu/convert_trace.py take them unchanged: OUTDIR/NAME.<default|expandable>.json with PyTorch's
memory statistics, and with --record OUTDIR/NAME.trace.csv.gz (action,addr,size,stream,time_us)
and OUTDIR/NAME.marks.json (step start times). Models are built from configs (random weights), so
no network is needed. NOFRAG_SEED picks the random draw.

Jobs:
  resnet_multiscale  ResNet-50 (torchvision), SGD, bf16 autocast, channels-last; every step draws
                     an image side from 128..320 and a batch that keeps pixels per batch about
                     constant; an evaluation pass at 224 x 224 every 8 steps. Convolution
                     workspaces and activation shapes change every step.
  t5_seq2seq         T5-small-sized encoder-decoder, AdamW, bf16 autocast; source 32..512 and
                     target 8..128 tokens, batch 16; every 6 steps beam search (4 beams, 16..64
                     new tokens) on 8 sources, whose cache is reordered at every token.
  gpt2_prefetch      GPT-2 124M (eager attention), AdamW, bf16 autocast, batch 8 of length 64..1024; each batch is
                     copied to the GPU on a side stream one step ahead (pinned memory,
                     non_blocking, record_stream on the training stream), as data loaders do:
                     blocks allocated on one stream and used and freed on another.
  maskrcnn_detect    Mask R-CNN (torchvision, ResNet-50 FPN), SGD, fp32; batches of 2-4 images of
                     random aspect ratio, resized by the model to a random short side of
                     480..800, each with 1..20 random boxes and masks. Proposals, RoI features and
                     mask targets change size every step.
  deeplab_segment    DeepLabV3 (torchvision, ResNet-50), AdamW, bf16 autocast, channels-last;
                     random crops of 256..640 pixels a side with a batch that keeps pixels per
                     batch about constant; an evaluation pass on 2 images of 1024 x 1024 every
                     5 steps.
  llama_accum_ckpt   A small Llama (8 layers, 1024 wide, vocabulary 32,000; random weights), AdamW,
                     bf16 autocast, gradient checkpointing; each step accumulates 4 micro-batches
                     of 4 sequences of a random length 128..1024. Gradient accumulation with
                     checkpointing on another architecture than GPT-2.
  llama_bigvocab_accum  A small Llama with a Llama-3-sized vocabulary (6 layers, 512 wide, vocabulary
                     128,256; random weights), AdamW, bf16 autocast, gradient checkpointing; each
                     step accumulates 4 micro-batches of 2 sequences of a random length 256..2048,
                     so the logits and their float32 copies dwarf the rest of the step.
  moe_varlen         A decoder of 6 layers, 768 wide, each feed-forward a mixture of 8 experts
                     with top-2 routing (written here in plain PyTorch), AdamW, bf16 autocast;
                     batch 8 of a random length 128..1024. The tokens each expert gets change in
                     every layer of every step, so every expert's activations change size.
  gpt2_accum_eager   The shared recording's gpt2_accum_ckpt job (GPT-2 124M, gradient
                     checkpointing, AdamW, bf16 autocast, 4 micro-batches of 4 sequences of a
                     random length 64..1024 a step) with eager attention, whose backward is
                     deterministic, so gpu/model_losses.py can compare its losses.
  gpt2_train_eval_eager  Likewise the shared gpt2_train_eval job (batch 8 of length 64..1024; every 10
                     steps an evaluation of 3 batches of 16 x 256..1024 and a copy of the weights
                     to the host, as a checkpoint does), with eager attention.
  gpt2_small_accum_ckpt, llama_small_accum_ckpt, gpt2_small_train_eval
                     Small jobs (about 1 GiB live): a GPT-2 of 6 layers, 512 wide, and a Llama of
                     4 layers, 512 wide (vocabulary 32,000), trained as gpt2_accum_ckpt /
                     llama_accum_ckpt are with micro-batches of 2 sequences, and as
                     gpt2_train_eval is with batches of 2 (evaluation: 3 batches of 4 x
                     256..1024). A 2 MiB page is a larger share of such a job: do the placement
                     figures hold when it is small?
  gpt2_rl_loop       GPT-2 124M (eager attention), AdamW: each step generates 16..128 tokens for 8
                     prompts of 32..256 (sampling, KV cache), then a policy-gradient step on the
                     generated sequences (float32 log-softmax over the vocabulary): generation and
                     training of changing shapes in every step, as in RL fine-tuning.
  gpt2_dpo           Preference fine-tuning (DPO's shape): a GPT-2 124M policy (AdamW) and a frozen
                     reference copy; each step a no-grad reference pass and a policy forward and
                     backward over 4 chosen and 4 rejected sequences (prompt 32..256, completions
                     16..512 tokens), float32 log-probabilities of the completions. Two models,
                     and a no-grad pass of changing shape before every training pass.
  gpt2_serve_requests  A GPT-2 of 12 layers, 1024 wide (bf16, inference only) serving requests
                     that arrive at random, each with its own KV cache, decoded one token a tick
                     without batching (about 36 at once); a step is a tick. Growing blocks of
                     unrelated lifetimes.
  unet_diffusion     A denoising U-Net (4 levels, 64..512 channels), AdamW, bf16 autocast,
                     channels-last: images of a random side 64..256 with the pixels per batch about
                     constant; every 5 steps 20 sampling iterations at 256 x 256 without gradients.
                     Convolution workspaces and activations change every step; sampling phases.
"""
import gzip
import json
import os
import random
import sys
import time

import torch


def keep(results, value):
    """Collects a step's result (a loss, or a checksum of predictions) for gpu/model_losses.py,
    which checks them against another run; while recording, results is None and nothing is kept."""
    if results is not None:
        results.append(value.detach())


def train_step(opt, compute_loss, results):
    """One optimizer step on the loss compute_loss() returns under bf16 autocast."""
    with torch.autocast("cuda", dtype=torch.bfloat16):
        loss = compute_loss()
    loss.backward()
    opt.step()
    opt.zero_grad(set_to_none=True)
    keep(results, loss)


def images(batch, side, dev):
    """A batch of random square images, channels-last."""
    return torch.randn(batch, 3, side, side, device=dev).to(memory_format=torch.channels_last)


def multiscale_images(sides, ref_side, ref_batch, min_batch, dev):
    """Random images at a side drawn from `sides`, as many as keep the pixels of the batch about
    those of ref_batch images of ref_side (at least min_batch), as multi-scale training does."""
    side = random.choice(sides)
    return images(max(min_batch, int(ref_batch * (ref_side / side) ** 2)), side, dev)


def resnet_multiscale(steps, dev, mark, results=None):
    import torchvision
    model = torchvision.models.resnet50().to(dev, memory_format=torch.channels_last)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=1e-4)
    for step in range(steps):
        mark(step)
        model.train()
        x = multiscale_images(range(128, 321, 32), 224, 96, 8, dev)
        y = torch.randint(0, 1000, (x.shape[0],), device=dev)
        train_step(opt, lambda: torch.nn.functional.cross_entropy(model(x), y), results)
        if step % 8 == 7:
            model.eval()
            with torch.no_grad(), torch.autocast("cuda", dtype=torch.bfloat16):
                for _ in range(2):
                    x = images(128, 224, dev)
                    keep(results, model(x).argmax(dim=1).sum())


def t5_seq2seq(steps, dev, mark, results=None):
    from transformers import T5Config, T5ForConditionalGeneration
    cfg = T5Config(d_model=512, d_ff=2048, num_layers=6, num_heads=8, vocab_size=32128,
                   decoder_start_token_id=0, pad_token_id=0, eos_token_id=1)
    model = T5ForConditionalGeneration(cfg).to(dev)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    for step in range(steps):
        mark(step)
        model.train()
        src = torch.randint(2, cfg.vocab_size, (16, random.randint(32, 512)), device=dev)
        tgt = torch.randint(2, cfg.vocab_size, (16, random.randint(8, 128)), device=dev)
        train_step(opt, lambda: model(input_ids=src, labels=tgt).loss, results)
        if step % 6 == 5:
            model.eval()
            src = torch.randint(2, cfg.vocab_size, (8, random.randint(32, 512)), device=dev)
            with torch.no_grad(), torch.autocast("cuda", dtype=torch.bfloat16):
                n = random.randint(16, 64)
                out = model.generate(input_ids=src, attention_mask=torch.ones_like(src), num_beams=4,
                                     max_new_tokens=n, min_new_tokens=n)
                keep(results, out.sum())


def gpt2_eager(dev, **extra):
    """GPT-2 124M (random weights) with eager attention: deterministic backward."""
    from transformers import GPT2Config, GPT2LMHeadModel
    cfg = GPT2Config(n_layer=12, n_embd=768, n_head=12, n_positions=1024, **extra)
    cfg._attn_implementation = "eager"
    return GPT2LMHeadModel(cfg).to(dev), cfg.vocab_size


def gpt2_prefetch(steps, dev, mark, results=None):
    model, vocab = gpt2_eager(dev)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    copy_stream = torch.cuda.Stream()

    def prefetch():
        cpu = torch.randint(0, vocab, (8, random.randint(64, 1024))).pin_memory()
        with torch.cuda.stream(copy_stream):
            return cpu.to(dev, non_blocking=True)

    upcoming = prefetch()
    for step in range(steps):
        mark(step)
        torch.cuda.current_stream().wait_stream(copy_stream)
        x = upcoming
        x.record_stream(torch.cuda.current_stream())
        upcoming = prefetch() if step + 1 < steps else None
        train_step(opt, lambda: model(input_ids=x, labels=x).loss, results)
        del x


def maskrcnn_detect(steps, dev, mark, results=None):
    import torchvision
    sides = tuple(range(480, 801, 32))
    model = torchvision.models.detection.maskrcnn_resnet50_fpn(
        weights=None, weights_backbone=None, num_classes=91, min_size=sides, max_size=1333).to(dev)
    opt = torch.optim.SGD(model.parameters(), lr=0.002, momentum=0.9, weight_decay=1e-4)
    model.train()
    for step in range(steps):
        mark(step)
        images, targets = [], []
        for _ in range(random.randint(2, 4)):
            h = random.randint(384, 800)
            w = int(h * random.uniform(0.6, 1.7))
            images.append(torch.rand(3, h, w, device=dev))
            n = random.randint(1, 20)
            x1 = torch.rand(n, device=dev) * (w - 40)
            y1 = torch.rand(n, device=dev) * (h - 40)
            bw = 16 + torch.rand(n, device=dev) * (w - x1 - 17)
            bh = 16 + torch.rand(n, device=dev) * (h - y1 - 17)
            boxes = torch.stack([x1, y1, x1 + bw, y1 + bh], dim=1)
            masks = torch.zeros(n, h, w, dtype=torch.uint8, device=dev)
            for i, (a, b, c, d) in enumerate(boxes.round().long().tolist()):
                masks[i, b:d, a:c] = 1
            targets.append({"boxes": boxes, "labels": torch.randint(1, 91, (n,), device=dev), "masks": masks})
        losses = model(images, targets)
        loss = sum(losses.values())
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        keep(results, loss)


def deeplab_segment(steps, dev, mark, results=None):
    import torchvision
    model = torchvision.models.segmentation.deeplabv3_resnet50(
        weights=None, weights_backbone=None, num_classes=21).to(dev, memory_format=torch.channels_last)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    for step in range(steps):
        mark(step)
        model.train()
        x = multiscale_images(range(256, 641, 32), 384, 16, 2, dev)
        y = torch.randint(0, 21, (x.shape[0], *x.shape[2:]), device=dev)
        train_step(opt, lambda: torch.nn.functional.cross_entropy(model(x)["out"], y), results)
        if step % 5 == 4:
            model.eval()
            with torch.no_grad(), torch.autocast("cuda", dtype=torch.bfloat16):
                x = images(2, 1024, dev)
                keep(results, model(x)["out"].argmax(dim=1).sum())


def train_accumulating(model, vocab, steps, mark, results, batch, lengths, dev):
    """Trains a causal language model with gradient checkpointing, AdamW and bf16 autocast; each
    step accumulates 4 micro-batches of `batch` sequences of a random length drawn from `lengths`
    (lo, hi)."""
    model.gradient_checkpointing_enable()
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    for step in range(steps):
        mark(step)
        for _ in range(4):
            x = torch.randint(0, vocab, (batch, random.randint(*lengths)), device=dev)
            with torch.autocast("cuda", dtype=torch.bfloat16):
                loss = model(input_ids=x, labels=x).loss / 4
            loss.backward()
            keep(results, loss)
        opt.step()
        opt.zero_grad(set_to_none=True)


def llama_accumulation(steps, dev, mark, results, batch, lengths, **config):
    """A Llama of the given config (random weights), trained by train_accumulating."""
    from transformers import LlamaConfig, LlamaForCausalLM
    cfg = LlamaConfig(use_cache=False, **config)
    train_accumulating(LlamaForCausalLM(cfg).to(dev), cfg.vocab_size, steps, mark, results, batch, lengths, dev)


def llama_accum_ckpt(steps, dev, mark, results=None):
    llama_accumulation(steps, dev, mark, results, 4, (128, 1024), hidden_size=1024, intermediate_size=2816,
                       num_hidden_layers=8, num_attention_heads=16, num_key_value_heads=16, vocab_size=32000,
                       max_position_embeddings=1024)


def llama_bigvocab_accum(steps, dev, mark, results=None):
    llama_accumulation(steps, dev, mark, results, 2, (256, 2048), hidden_size=512, intermediate_size=1408,
                       num_hidden_layers=6, num_attention_heads=8, num_key_value_heads=8, vocab_size=128256,
                       max_position_embeddings=2048)


class MoeLayer(torch.nn.Module):
    """Pre-norm attention, then a top-2 mixture of experts: each expert runs on the tokens routed
    to it, gathered into a batch of their own, and its output is added back weighted by the gate."""

    def __init__(self, width, heads, experts):
        super().__init__()
        self.norm1, self.norm2 = torch.nn.LayerNorm(width), torch.nn.LayerNorm(width)
        self.attn = torch.nn.MultiheadAttention(width, heads, batch_first=True)
        self.router = torch.nn.Linear(width, experts, bias=False)
        self.experts = torch.nn.ModuleList(
            torch.nn.Sequential(torch.nn.Linear(width, 4 * width), torch.nn.GELU(), torch.nn.Linear(4 * width, width))
            for _ in range(experts))

    def forward(self, x, mask):
        h = self.norm1(x)
        x = x + self.attn(h, h, h, attn_mask=mask, need_weights=False)[0]
        tokens = self.norm2(x).reshape(-1, x.shape[-1])
        gates, chosen = torch.topk(torch.softmax(self.router(tokens).float(), dim=-1), 2, dim=-1)
        out = torch.zeros_like(tokens)
        for e, expert in enumerate(self.experts):
            rows, slot = torch.nonzero(chosen == e, as_tuple=True)
            if rows.numel():
                out.index_add_(0, rows, expert(tokens[rows]) * gates[rows, slot].unsqueeze(1).to(tokens.dtype))
        return x + out.reshape(x.shape)


def moe_varlen(steps, dev, mark, results=None):
    vocab, width = 32000, 768
    embed = torch.nn.Embedding(vocab, width).to(dev)
    layers = torch.nn.ModuleList(MoeLayer(width, 12, 8) for _ in range(6)).to(dev)
    head = torch.nn.Linear(width, vocab, bias=False).to(dev)
    params = [*embed.parameters(), *layers.parameters(), *head.parameters()]
    opt = torch.optim.AdamW(params, lr=1e-4)

    def compute_loss(x):
        mask = torch.triu(torch.full((x.shape[1], x.shape[1]), float("-inf"), device=dev), diagonal=1)
        h = embed(x)
        for layer in layers:
            h = layer(h, mask)
        logits = head(h)
        return torch.nn.functional.cross_entropy(logits[:, :-1].reshape(-1, vocab).float(), x[:, 1:].reshape(-1))

    for step in range(steps):
        mark(step)
        x = torch.randint(0, vocab, (8, random.randint(128, 1024)), device=dev)
        train_step(opt, lambda: compute_loss(x), results)


def gpt2_accum_eager(steps, dev, mark, results=None):
    model, vocab = gpt2_eager(dev, use_cache=False)
    train_accumulating(model, vocab, steps, mark, results, 4, (64, 1024), dev)


def train_with_evaluation(model, vocab, steps, mark, results, batch, eval_batch, dev):
    """Trains a causal language model (AdamW, bf16 autocast) on `batch` sequences of length
    64..1024 a step; every 10 steps evaluates 3 batches of `eval_batch` x 256..1024 and copies the
    weights to the host, as a checkpoint does."""
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    for step in range(steps):
        mark(step)
        model.train()
        x = torch.randint(0, vocab, (batch, random.randint(64, 1024)), device=dev)
        train_step(opt, lambda: model(input_ids=x, labels=x).loss, results)
        if step % 10 == 9:
            model.eval()
            with torch.no_grad(), torch.autocast("cuda", dtype=torch.bfloat16):
                for _ in range(3):
                    x = torch.randint(0, vocab, (eval_batch, random.randint(256, 1024)), device=dev)
                    keep(results, model(input_ids=x, labels=x).loss)
            checkpoint = {k: v.detach().to("cpu") for k, v in model.state_dict().items()}
            del checkpoint


def gpt2_train_eval_eager(steps, dev, mark, results=None):
    model, vocab = gpt2_eager(dev)
    train_with_evaluation(model, vocab, steps, mark, results, 8, 16, dev)


def gpt2_small(dev):
    """A GPT-2 of 6 layers, 512 wide (about 45M parameters with its 50,257-token vocabulary)."""
    from transformers import GPT2Config, GPT2LMHeadModel
    cfg = GPT2Config(n_layer=6, n_embd=512, n_head=8, n_positions=1024, use_cache=False)
    return GPT2LMHeadModel(cfg).to(dev), cfg.vocab_size


def gpt2_small_accum_ckpt(steps, dev, mark, results=None):
    model, vocab = gpt2_small(dev)
    train_accumulating(model, vocab, steps, mark, results, 2, (64, 1024), dev)


def llama_small_accum_ckpt(steps, dev, mark, results=None):
    llama_accumulation(steps, dev, mark, results, 2, (128, 1024), hidden_size=512, intermediate_size=1408,
                       num_hidden_layers=4, num_attention_heads=8, num_key_value_heads=8, vocab_size=32000,
                       max_position_embeddings=1024)


def gpt2_small_train_eval(steps, dev, mark, results=None):
    model, vocab = gpt2_small(dev)
    train_with_evaluation(model, vocab, steps, mark, results, 2, 4, dev)


def gpt2_rl_loop(steps, dev, mark, results=None):
    """Generate, then learn from what was generated (the shape of PPO / GRPO fine-tuning): each
    step samples completions for 8 prompts of 32..256 tokens, 16..128 new tokens each (KV cache
    growing token by token, no gradients), then takes a policy-gradient step on the whole
    sequences with a random reward per sequence (log-softmax over the full vocabulary in float32)."""
    model, vocab = gpt2_eager(dev)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-5)
    for step in range(steps):
        mark(step)
        prompt_len, new = random.randint(32, 256), random.randint(16, 128)
        prompts = torch.randint(0, vocab, (8, prompt_len), device=dev)
        model.eval()
        with torch.no_grad(), torch.autocast("cuda", dtype=torch.bfloat16):
            seqs = model.generate(prompts, attention_mask=torch.ones_like(prompts), max_new_tokens=new,
                                  min_new_tokens=new, do_sample=True, pad_token_id=0)
        model.train()
        rewards = torch.randn(seqs.shape[0], 1, device=dev)

        def policy_loss():
            logits = model(input_ids=seqs).logits[:, prompt_len - 1:-1]
            logp = torch.log_softmax(logits.float(), dim=-1).gather(-1, seqs[:, prompt_len:, None]).squeeze(-1)
            return -(rewards * logp).mean()

        train_step(opt, policy_loss, results)


def gpt2_dpo(steps, dev, mark, results=None):
    """Preference fine-tuning (the shape of DPO): a trained policy and a frozen reference copy, both
    GPT-2 124M on the GPU; each step takes 4 prompts of 32..256 tokens, each with a chosen and a
    rejected completion of 16..512 tokens (padded to the longer pair), runs the reference on all
    8 sequences without gradients, then the policy forward and backward, the loss comparing the
    two models' summed float32 log-probabilities of the completions."""
    policy, vocab = gpt2_eager(dev)
    reference, _ = gpt2_eager(dev)
    reference.load_state_dict(policy.state_dict())
    reference.eval().requires_grad_(False)
    opt = torch.optim.AdamW(policy.parameters(), lr=1e-6)
    beta = 0.1
    for step in range(steps):
        mark(step)
        prompt_len = random.randint(32, 256)
        length = prompt_len + max(random.randint(16, 512), random.randint(16, 512))
        seqs = torch.randint(0, vocab, (8, min(length, 1024)), device=dev)  # chosen 0-3, rejected 4-7
        targets = seqs[:, prompt_len:]

        def completion_logp(model):
            logits = model(input_ids=seqs).logits[:, prompt_len - 1:-1]
            return torch.log_softmax(logits.float(), dim=-1).gather(-1, targets[..., None]).squeeze(-1).sum(-1)

        with torch.no_grad(), torch.autocast("cuda", dtype=torch.bfloat16):
            ref = completion_logp(reference)

        def dpo_loss():
            ratio = completion_logp(policy) - ref
            return -torch.nn.functional.logsigmoid(beta * (ratio[:4] - ratio[4:])).mean()

        train_step(opt, dpo_loss, results)


def gpt2_serve_requests(steps, dev, mark, results=None):
    """A naive text-generation server: a request arrives in half the ticks (a prompt of 16..512
    tokens, wanting 16..128 new tokens), each decodes one token a tick with its own KV cache (no
    batching, no paged attention: every token reallocates every layer's cache), and leaves when
    done; about 36 are active at once. A step is one tick. Many growing blocks of unrelated
    lifetimes: the fragmentation a long-running inference process lives with."""
    from transformers import GPT2Config, GPT2LMHeadModel
    cfg = GPT2Config(n_layer=12, n_embd=1024, n_head=16, n_positions=1024)
    model = GPT2LMHeadModel(cfg).to(dev, dtype=torch.bfloat16).eval()
    active = []  # [cache, next token, tokens left]
    with torch.no_grad():
        for step in range(steps):
            mark(step)
            if random.random() < 0.5:
                prompt = torch.randint(0, cfg.vocab_size, (1, random.randint(16, 512)), device=dev)
                out = model(input_ids=prompt, use_cache=True)
                active.append([out.past_key_values, out.logits[:, -1:].argmax(-1), random.randint(16, 128)])
                del out
            for request in active:
                out = model(input_ids=request[1], past_key_values=request[0], use_cache=True)
                request[0], request[1] = out.past_key_values, out.logits[:, -1:].argmax(-1)
                request[2] -= 1
                del out
            if active:  # the tokens chosen this tick: equal runs choose equal tokens
                keep(results, torch.cat([r[1] for r in active]).sum())
            active = [r for r in active if r[2] > 0]


def unet_diffusion(steps, dev, mark, results=None):
    """A denoising U-Net (4 levels, 64..512 channels, plain PyTorch), AdamW, bf16 autocast,
    channels-last, trained on random images at a side of 64..256 with a batch keeping pixels about
    constant; every 5 steps, 20 sampling iterations at 256 x 256 without gradients, as diffusion
    training does to watch its progress."""
    import torch.nn.functional as F

    def block(cin, cout):
        return torch.nn.Sequential(torch.nn.Conv2d(cin, cout, 3, padding=1), torch.nn.GroupNorm(8, cout),
                                   torch.nn.SiLU(), torch.nn.Conv2d(cout, cout, 3, padding=1),
                                   torch.nn.GroupNorm(8, cout), torch.nn.SiLU())

    widths = (64, 128, 256, 512)

    class UNet(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.downs, self.ups, cin = torch.nn.ModuleList(), torch.nn.ModuleList(), 4
            for w in widths:
                self.downs.append(block(cin, w))
                cin = w
            for w in reversed(widths[:-1]):
                self.ups.append(block(cin + w, w))
                cin = w
            self.out = torch.nn.Conv2d(cin, 3, 1)

        def forward(self, x):
            skips = []
            for i, down in enumerate(self.downs):
                x = down(x)
                if i < len(self.downs) - 1:
                    skips.append(x)
                    x = F.avg_pool2d(x, 2)
            for up in self.ups:
                x = F.interpolate(x, scale_factor=2.0, mode="nearest")
                x = up(torch.cat([x, skips.pop()], dim=1))
            return self.out(x)

    def with_level(images, level):
        b, _, h, w = images.shape
        return torch.cat([images, level.expand(b, 1, h, w)], dim=1).contiguous(memory_format=torch.channels_last)

    model = UNet().to(dev, memory_format=torch.channels_last)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    for step in range(steps):
        mark(step)
        model.train()
        side = random.choice(range(64, 257, 32))
        batch = max(4, int(32 * (128 / side) ** 2))
        x = torch.randn(batch, 3, side, side, device=dev)
        level = torch.rand(batch, 1, 1, 1, device=dev)
        noise = torch.randn_like(x)
        noisy = with_level(x * (1 - level) + noise * level, level)
        train_step(opt, lambda: F.mse_loss(model(noisy).float(), noise), results)
        if step % 5 == 4:
            model.eval()
            with torch.no_grad(), torch.autocast("cuda", dtype=torch.bfloat16):
                z = torch.randn(8, 3, 256, 256, device=dev)
                for i in range(20):
                    level = torch.full((8, 1, 1, 1), 1 - i / 20, device=dev)
                    z = z - 0.05 * model(with_level(z, level)).float()
                keep(results, z.sum())


# One line: gpu/record.sh finds job names here by grep.
JOBS = {"resnet_multiscale": resnet_multiscale, "t5_seq2seq": t5_seq2seq, "gpt2_prefetch": gpt2_prefetch, "maskrcnn_detect": maskrcnn_detect, "deeplab_segment": deeplab_segment, "llama_accum_ckpt": llama_accum_ckpt, "llama_bigvocab_accum": llama_bigvocab_accum, "moe_varlen": moe_varlen, "gpt2_accum_eager": gpt2_accum_eager, "gpt2_train_eval_eager": gpt2_train_eval_eager, "gpt2_small_accum_ckpt": gpt2_small_accum_ckpt, "llama_small_accum_ckpt": llama_small_accum_ckpt, "gpt2_small_train_eval": gpt2_small_train_eval, "gpt2_rl_loop": gpt2_rl_loop, "gpt2_dpo": gpt2_dpo, "gpt2_serve_requests": gpt2_serve_requests, "unet_diffusion": unet_diffusion}
STAT_KEYS = ["allocated_bytes.all.peak", "reserved_bytes.all.peak", "active_bytes.all.peak",
             "requested_bytes.all.peak", "inactive_split_bytes.all.peak", "num_alloc_retries",
             "num_ooms", "segment.all.peak", "allocation.all.allocated", "num_device_alloc",
             "num_device_free"]


def main(name, steps, outdir, record):
    if name not in JOBS:
        raise SystemExit(f"unknown job {name}; known: {', '.join(JOBS)}")
    seed = int(os.environ.get("NOFRAG_SEED", "0"))
    torch.manual_seed(seed)
    random.seed(seed)
    dev = torch.device("cuda")
    marks = []
    if record:
        # Allocation events only: stack capture would slow the job and is not needed for replay.
        torch.cuda.memory._record_memory_history(enabled="all", context=None, stacks="python",
                                                 max_entries=4_000_000)
    start = time.time()
    JOBS[name](steps, dev, lambda step: marks.append((step, time.time_ns() // 1000)))
    torch.cuda.synchronize()
    conf = os.environ.get("PYTORCH_CUDA_ALLOC_CONF", "default")
    stats = torch.cuda.memory_stats()
    summary = {k: stats.get(k) for k in STAT_KEYS}
    summary.update(name=name, steps=steps, wall_s=round(time.time() - start, 2), conf=conf,
                   torch=torch.__version__)
    kind = "expandable" if "expandable" in conf else "default"
    with open(os.path.join(outdir, f"{name}.{kind}.json"), "w") as f:
        json.dump(summary, f)
    print(json.dumps(summary))
    if not record:
        return
    events = torch.cuda.memory._snapshot()["device_traces"][torch.cuda.current_device()]
    with gzip.open(os.path.join(outdir, f"{name}.trace.csv.gz"), "wt") as f:
        f.write("action,addr,size,stream,time_us\n")
        for e in events:
            f.write(f"{e['action']},{e.get('addr', 0)},{e.get('size', 0)},{e.get('stream', 0)},"
                    f"{e.get('time_us', 0)}\n")
    with open(os.path.join(outdir, f"{name}.marks.json"), "w") as f:
        json.dump(marks, f)
    print(name, "trace entries", len(events))


if __name__ == "__main__":
    if len(sys.argv) < 4:
        raise SystemExit(__doc__)
    main(sys.argv[1], int(sys.argv[2]), sys.argv[3], "--record" in sys.argv)
