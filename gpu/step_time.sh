#!/usr/bin/env bash
# Step time under torchrun, PyTorch's allocator against nofrag's settings, run side by side and
# repeated in turn (the machine's noise shows as the spread between repeats of one setting).
# Prints one line per run (rank 0's seconds a step over the timed steps, and nofrag's driver time,
# host waits, calls and page moves a timed step) and then the median of each setting over native's.
#   gpu/step_time.sh [REPEATS] [SETTING...]      (default: 3 native nofrag nofrag_8m nofrag_noacross)
#   WRAPPER=fsdp gpu/step_time.sh ...             ddp (default), fsdp, fsdp2 or tp (gpu/ddp_losses.py)
#   STEPS=100 gpu/step_time.sh ...                steps a run (the first 5 are not timed)
# Settings: native (PyTorch's caching allocator), nofrag (defaults), nofrag_8m (NOFRAG_PAGE_SIZE=8M:
# a quarter of the driver calls), nofrag_noacross (NOFRAG_REUSE_ACROSS_STREAMS=0: memory freed on
# one stream is not reused on another until its work is done, no waits queued between streams).
# Writes $OUT/step_time/ (default gpu-results/step_time/), the table in WRAPPER_summary.txt.
set -uo pipefail
cd "$(dirname "$0")/.."
repeats=${1:-3}; shift || true
settings=${*:-native nofrag nofrag_8m nofrag_noacross}
wrapper=${WRAPPER:-ddp}
steps=${STEPS:-100}
dir=${OUT:-gpu-results}/step_time
mkdir -p "$dir"
export PYTHONUNBUFFERED=1 NOFRAG_LIBRARY=${NOFRAG_LIBRARY:-$PWD/build-gpu/libnofrag.so}
gpus=$(nvidia-smi -L | wc -l)
status=0
for ((r = 1; r <= repeats; r++)); do
  for setting in $settings; do
    mode=nofrag; env=()
    case $setting in
      native) mode=native ;;
      nofrag) ;;
      nofrag_8m) env=(NOFRAG_PAGE_SIZE=8M) ;;
      nofrag_noacross) env=(NOFRAG_REUSE_ACROSS_STREAMS=0) ;;
      *) echo "step_time.sh: unknown setting $setting" >&2; exit 2 ;;
    esac
    json="$dir/${wrapper}_${setting}_$r.json"
    if ! env "${env[@]}" torchrun --standalone --nproc_per_node="$gpus" gpu/ddp_losses.py "$mode" "$json" \
        "$wrapper" "$steps" >"${json%.json}.log" 2>&1; then
      echo "$setting run $r failed, see ${json%.json}.log"; grep -E "Error" "${json%.json}.log" | tail -3
      status=1
    fi
  done
done
python3 - "$dir" "$wrapper" "$repeats" $settings <<'EOF' | tee "$dir/${wrapper}_summary.txt" || status=1
import json, statistics, sys
folder, wrapper, repeats, settings = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4:]
medians = {}
print(f"{'setting':18} run  ms/step  driver ms  host-wait ms  calls  moves  (rank 0, timed steps)")
for setting in settings:
    times = []
    for r in range(1, repeats + 1):
        try:
            run = json.load(open(f"{folder}/{wrapper}_{setting}_{r}.json"))
        except OSError:
            continue
        s = run["stats"][0]
        times.append(s["seconds_per_step"] * 1e3)
        extra = ""
        if "backend_ns_per_timed_step" in s:
            extra = (f"{s['backend_ns_per_timed_step'] / 1e6:9.2f} {s['event_wait_ns_per_timed_step'] / 1e6:13.2f}"
                     f" {s['backend_calls_per_timed_step']:6.1f} {s['num_remaps_per_timed_step']:6.1f}")
        print(f"{setting:18} {r:3} {times[-1]:8.2f} {extra}")
    if times:
        medians[setting] = statistics.median(times)
if "native" in medians:
    for setting, ms in medians.items():
        print(f"median {setting:18} {ms:8.2f} ms a step  {ms / medians['native']:.3f}x native")
if len(medians) < len(settings):
    sys.exit(1)
EOF
exit $status
