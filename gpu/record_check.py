"""nofrag.record on a real job: records 12 steps of a small training job with PyTorch's allocator,
replays the trace with the command-line replayer and checks it against PyTorch's own figures: the
trace's live peak in PyTorch's 512-byte blocks is at least PyTorch's allocated peak (a block stays
live until its free has completed) and at most its reserved peak, the replay completes, and every
step was marked. (The trace keeps requested sizes, which the replay's live peak adds up.) Then the
same for a memory snapshot: history on, 3 steps, torch.cuda.memory._dump_snapshot, converted with
`python3 -m nofrag.record` (a real snapshot must load as plain data) and replayed.

usage: python3 gpu/record_check.py NOFRAG_CLI OUT_DIR
"""
import csv
import gzip
import json
import os
import subprocess
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "python"))
import nofrag.record  # noqa: E402
import torch  # noqa: E402

cli, out_dir = sys.argv[1], sys.argv[2]
base = os.path.join(out_dir, "recorded_job")
with nofrag.record.Recorder(base) as recorder:
    model = torch.nn.Sequential(torch.nn.Linear(4096, 4096), torch.nn.GELU(), torch.nn.Linear(4096, 4096)).cuda()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    for step in range(12):
        recorder.step()
        x = torch.randn(64 * (1 + step % 4), 4096, device="cuda")
        loss = model(x).square().mean()
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
summary = recorder.summary
allocated, reserved = torch.cuda.max_memory_allocated(), torch.cuda.max_memory_reserved()
live = block_peak = 0
with gzip.open(base + ".csv.gz", "rt") as f:
    for row in csv.DictReader(f):
        size = (int(row["Size"]) + 511) // 512 * 512
        live += size if row["Action"] == "allocate" else -size
        block_peak = max(block_peak, live)
replay = json.loads(subprocess.run([cli, "replay", "--json", "--min-capacity", base + ".csv.gz"], check=True,
                                   capture_output=True, text=True).stdout)
ok = summary["steps"] == 12 and replay["steps"] == 12 and replay["failed_allocs"] == 0
ok &= allocated <= block_peak <= reserved
print(f"recorded {summary['events']} events, {summary['steps']} steps; PyTorch allocated peak {allocated}, "
      f"reserved peak {reserved}; trace live peak {block_peak} in blocks, {replay['peak_live_bytes']} requested; nofrag held "
      f"{replay['overhead_ratio']:.4f}x live, min capacity {replay['min_capacity_ratio']:.4f}x: "
      f"{'ok' if ok else 'MISMATCH'}")

# A snapshot saved with _dump_snapshot, as users of PyTorch's memory visualiser have.
snap_path, snap_base = os.path.join(out_dir, "snapshot.pickle"), os.path.join(out_dir, "snapshot_job")
torch.cuda.memory._record_memory_history(max_entries=100_000)
for step in range(3):
    x = torch.randn(64 * (1 + step), 4096, device="cuda")
    model(x).square().mean().backward()
    opt.step()
    opt.zero_grad(set_to_none=True)
torch.cuda.synchronize()
torch.cuda.memory._dump_snapshot(snap_path)
torch.cuda.memory._record_memory_history(enabled=None)
res = subprocess.run([sys.executable, "-m", "nofrag.record", snap_path, snap_base], capture_output=True, text=True,
                     cwd=os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "python"))
snap_ok = res.returncode == 0
if snap_ok:
    snap_replay = json.loads(subprocess.run([cli, "replay", "--json", snap_base + ".csv.gz"], check=True,
                                            capture_output=True, text=True).stdout)
    snap_ok = snap_replay["events"] > 0 and snap_replay["failed_allocs"] == 0
    print(f"snapshot converted ({res.stdout.splitlines()[0]}), replayed: {snap_replay['events']} events, "
          f"held {snap_replay['overhead_ratio']:.4f}x live: {'ok' if snap_ok else 'MISMATCH'}")
else:
    print(f"snapshot conversion failed: {res.stderr.strip()}: MISMATCH")
sys.exit(0 if ok and snap_ok else 1)
