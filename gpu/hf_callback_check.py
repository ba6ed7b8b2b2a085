"""nofrag.hf_callback() in a real transformers Trainer: a small GPT-2 trained for 12 steps with an
evaluation at four times the training batch every 4 steps and a checkpoint save every 6, under
nofrag, with and without the callback.

  python3 gpu/hf_callback_check.py callback|plain OUT_DIR

Prints the steps nofrag counted, held memory at the end, the training loss history and the bytes
the callback gave back; "hf_callback_check MODE: PASSED" when the callback marked every step and
(with it) held memory at the end is below the plain run's figure printed before (pass it as
PLAIN_HELD=bytes), or always for plain."""
import json
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "python"))
import nofrag  # noqa: E402
import nofrag.torch  # noqa: E402

mode, out_dir = sys.argv[1], sys.argv[2]
nofrag.torch.enable()
import torch  # noqa: E402
from transformers import GPT2Config, GPT2LMHeadModel, Trainer, TrainingArguments  # noqa: E402

torch.manual_seed(0)


class Tokens(torch.utils.data.Dataset):
    def __init__(self, n, length):
        g = torch.Generator().manual_seed(n)
        self.data = torch.randint(0, 50257, (n, length), generator=g)

    def __len__(self):
        return len(self.data)

    def __getitem__(self, i):
        return {"input_ids": self.data[i], "labels": self.data[i]}


model = GPT2LMHeadModel(GPT2Config(n_layer=6, n_embd=512, n_head=8, n_positions=1024))
args = TrainingArguments(output_dir=out_dir, per_device_train_batch_size=8, per_device_eval_batch_size=32,
                         max_steps=12, eval_strategy="steps", eval_steps=4, save_strategy="steps", save_steps=6,
                         logging_steps=1, report_to=[], seed=0, data_seed=0, dataloader_num_workers=0)
trainer = Trainer(model=model, args=args, train_dataset=Tokens(96, 512), eval_dataset=Tokens(64, 512))
if mode == "callback":
    trainer.add_callback(nofrag.hf_callback())
trainer.train()
torch.cuda.synchronize()
st = nofrag.stats()
losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
result = {"mode": mode, "steps_marked": st["num_steps"], "held_end": st["reserved_bytes.current"],
          "live_peak": st["allocated_bytes.peak"], "losses": losses}
print(json.dumps(result))
nofrag.check_pools()
plain_held = int(os.environ.get("PLAIN_HELD", "0"))
ok = mode == "plain" or (st["num_steps"] == 12 and (not plain_held or st["reserved_bytes.current"] < plain_held))
print(f"hf_callback_check {mode}: {'PASSED' if ok else 'FAILED'}")
sys.exit(0 if ok else 1)
