"""Compares the loss files of gpt2_losses.py, ddp_losses.py or model_losses.py runs: exits 1 unless
every loss (and evaluation checksum) is identical to the first file's."""
import json
import sys

runs = [json.load(open(p)) for p in sys.argv[1:]]
base = runs[0]
ok = True
for r in runs[1:]:
    same = r["losses"] == base["losses"]
    first = next((i for i, (a, b) in enumerate(zip(r["losses"], base["losses"])) if a != b), None)
    print(f"{r['mode']} vs {base['mode']}: {len(r['losses'])} losses, identical: {same}"
          + ("" if same else f" (first difference at step {first})"))
    ok &= same and len(r["losses"]) == base.get("result_count", base["steps"])
    if r.get("too_late_error") is not None:
        print("  enable() after CUDA init:", r["too_late_error"][:100])
        ok &= "before CUDA is initialised" in r["too_late_error"]
sys.exit(0 if ok else 1)
