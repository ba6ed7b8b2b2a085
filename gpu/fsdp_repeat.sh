#!/usr/bin/env bash
# FSDP on every GPU of the machine, the same 30 deterministic steps run again and again: does
# nofrag's setting give PyTorch's losses every time? Rare cross-stream races show as a run whose
# losses differ (or NaN), so one run proves little.
#   gpu/fsdp_repeat.sh [RUNS] [VARIANT...]
#   WRAPPER=fsdp2 gpu/fsdp_repeat.sh ...   PyTorch's per-parameter FSDP (fully_shard) instead
#   WRAPPER=tp gpu/fsdp_repeat.sh ...      tensor parallelism instead (gpu/ddp_losses.py's tp)
#   NOFRAG_CAPACITY=BYTES gpu/fsdp_repeat.sh ...   every rank's pool under that cap (a tight cap
#   makes pages move under live collectives and the host wait for other streams)
#   CAP_FACTOR=1.02 gpu/fsdp_repeat.sh ...   the same, the cap being that factor times the largest
#   per-rank peak of PyTorch's own run (the session's tight-cap check:
#   WRAPPER=fsdp2 CAP_FACTOR=1.02 gpu/fsdp_repeat.sh 5 default noacross)
# Variants: default (nofrag's defaults: reuse across streams where the record-stream callback is
# set), noacross (NOFRAG_REUSE_ACROSS_STREAMS=0), across (=1), across_nocb (=1 with PyTorch's C++
# record-stream callback left unset: NCCL's stream uses unheard; expected to fail at times, so its
# runs are shown, not counted), avoid_rs (nofrag's defaults with TORCH_NCCL_AVOID_RECORD_STREAMS=1:
# NCCL keeps collective tensors alive until the work is waited for instead of calling
# record_stream, so those uses never reach the allocator at all).
# Writes $OUT/fsdp_repeat/ (default gpu-results/) and prints one line per run.
set -uo pipefail
cd "$(dirname "$0")/.."
runs=${1:-4}; shift || true
variants=${*:-default noacross across_nocb}
wrapper=${WRAPPER:-fsdp}
dir=${OUT:-gpu-results}/fsdp_repeat${WRAPPER:+_$WRAPPER}${NOFRAG_CAPACITY:+_cap}${CAP_FACTOR:+_cap$CAP_FACTOR}
mkdir -p "$dir"
export PYTHONUNBUFFERED=1 NOFRAG_LIBRARY=${NOFRAG_LIBRARY:-$PWD/build-gpu/libnofrag.so}
gpus=$(nvidia-smi -L | wc -l)
# Each run's whole output goes to NAME.log beside its JSON; its error lines are shown.
launch() {
  torchrun --standalone --nproc_per_node="$gpus" gpu/ddp_losses.py "$@" "$wrapper" >"${2%.json}.log" 2>&1 ||
    { echo "${2##*/}: failed, see ${2%.json}.log"; grep -E "Error|error" "${2%.json}.log" | grep -v "error_file\|errors.html" | tail -3; }
}
launch native "$dir/native.json"
if [ -n "${CAP_FACTOR:-}" ]; then
  NOFRAG_CAPACITY=$(python3 -c 'import json, sys
peak = max(s["allocated_bytes.all.peak"] for s in json.load(open(sys.argv[1]))["stats"])
print(int(float(sys.argv[2]) * peak))' "$dir/native.json" "$CAP_FACTOR") || exit 1
  export NOFRAG_CAPACITY
  echo "cap: $CAP_FACTOR x PyTorch's largest per-rank peak = $NOFRAG_CAPACITY bytes"
fi
for v in $variants; do
  for i in $(seq 1 "$runs"); do
    case $v in
      default) launch nofrag "$dir/${v}_$i.json" ;;
      noacross) NOFRAG_REUSE_ACROSS_STREAMS=0 launch nofrag "$dir/${v}_$i.json" ;;
      across) NOFRAG_REUSE_ACROSS_STREAMS=1 launch nofrag "$dir/${v}_$i.json" ;;
      avoid_rs) TORCH_NCCL_AVOID_RECORD_STREAMS=1 launch nofrag "$dir/${v}_$i.json" ;;
      across_nocb) DDP_LOSSES_SKIP_RECORD_STREAM_CALLBACK=1 NOFRAG_REUSE_ACROSS_STREAMS=1 launch nofrag "$dir/${v}_$i.json" ;;
      *) echo "unknown variant $v"; exit 2 ;;
    esac
  done
done
python3 - "$dir" $variants <<'PY'
import json, math, os, sys
d, variants = sys.argv[1], sys.argv[2:]
base = json.load(open(os.path.join(d, "native.json")))
bad = 0
for v in variants:
    for name in sorted(f for f in os.listdir(d) if f.startswith(v + "_") and f[len(v) + 1:-5].isdigit()):
        r = json.load(open(os.path.join(d, name)))
        same = r["losses"] == base["losses"]
        last = float.fromhex(r["losses"][-1])
        held = " ".join(f'{s["overhead_ratio"]:.3f}x' for s in r["stats"])
        ms = r["stats"][0]["seconds_per_step"] * 1e3
        per_rank = lambda key: "/".join(str(s.get(key, "-")) for s in r["stats"])
        print(f"{name:18s} identical {str(same):5s} final loss {last:.6f}{' NaN' if math.isnan(last) else ''}"
              f"  held {held}  {ms:.1f} ms/step  moves {per_rank('num_remaps')}  device waits "
              f"{per_rank('calls_stream_wait')}  host waits {per_rank('calls_event_sync')}  OOMs {per_rank('num_ooms')}")
        bad += (not same) and v != "across_nocb"
print(f"native final loss {float.fromhex(base['losses'][-1]):.6f}, {base['stats'][0]['seconds_per_step']*1e3:.1f} ms/step")
sys.exit(1 if bad else 0)
PY
