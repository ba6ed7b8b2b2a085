#!/usr/bin/env bash
# What a tight cap costs a real job on the GPU: the same deterministic run under PyTorch's
# allocator, under nofrag with the PyTorch front end's defaults (no budget), and under nofrag capped
# at CAP_FACTOR (default 1.02) x PyTorch's allocated peak, in turn (native, default, cap, then
# cap, default, native, ...) so that drift of the machine falls on all three alike. Prints, per
# job, the median step time of every run (steps after step 3), nofrag's page moves and backend
# calls a step after step 3 under the cap, held / live, the time a step spent inside nofrag's driver
# calls (measured on the host, host waits in brackets), and whether every loss was identical. The
# default runs tell what nofrag costs without a budget; the capped ones, what the tight cap adds.
#   gpu/tight_cap_cost.sh JOB[:STEPS] ...        jobs of gpu/workloads_more.py (24 steps unless given)
#   ROUNDS=2 CAP_FACTOR=1.02 RUN_TIMEOUT=600 gpu/tight_cap_cost.sh gpt2_accum_eager:30 llama_accum_ckpt
# Writes $OUT/tight_cap_cost/ (default gpu-results/). Needs build-gpu/libnofrag.so (gpu/run-all.sh
# builds it). README.md has the replay's figures for the recorded twins of these jobs; this
# measures what they cost in step time, which is what a user notices.
set -uo pipefail
cd "$(dirname "$0")/.."
[ $# -gt 0 ] || { sed -n 2,13p "$0"; exit 2; }
rounds=${ROUNDS:-2}
factor=${CAP_FACTOR:-1.02}
dir=${OUT:-gpu-results}/tight_cap_cost
mkdir -p "$dir"
export PYTHONUNBUFFERED=1 NOFRAG_LIBRARY=${NOFRAG_LIBRARY:-$PWD/build-gpu/libnofrag.so}
status=0
run() {  # run MODE OUT.json JOB STEPS: one training run, its log beside its JSON
  timeout "${RUN_TIMEOUT:-600}" python3 gpu/model_losses.py "$3" "$1" "$2" "$4" >"${2%.json}.log" 2>&1 ||
    { echo "${2##*/}: failed, see ${2%.json}.log"; grep -v Warning "${2%.json}.log" | tail -3; status=1; }
}
for spec in "$@"; do
  job=${spec%%:*}
  steps=24
  [[ $spec == *:* ]] && steps=${spec##*:}
  # PyTorch's run first, for the cap; then each round in turn, the order reversed every other
  # round (native, default, cap; cap, default, native; ...) so that a machine growing faster or
  # slower over the call does not favour whichever mode comes first.
  run native "$dir/${job}_native_1.json" "$job" "$steps"
  cap=$(python3 -c 'import json, sys
print(int(float(sys.argv[2]) * json.load(open(sys.argv[1]))["stats"]["allocated_bytes.all.peak"]))' \
    "$dir/${job}_native_1.json" "$factor") || { status=1; continue; }
  echo "$job: cap $factor x PyTorch's allocated peak = $cap bytes"
  for r in $(seq 1 "$rounds"); do
    modes="native default cap"
    ((r % 2 == 0)) && modes="cap default native"
    for m in $modes; do
      case $m in
        native) ((r > 1)) && run native "$dir/${job}_native_$r.json" "$job" "$steps" ;;
        default) run nofrag "$dir/${job}_default_$r.json" "$job" "$steps" ;;
        cap) NOFRAG_CAPACITY=$cap run nofrag "$dir/${job}_cap_$r.json" "$job" "$steps" ;;
      esac
    done
  done
  python3 gpu/compare_losses.py "$dir/${job}_native_1.json" "$dir/${job}"_native_*.json \
    "$dir/${job}"_default_*.json "$dir/${job}"_cap_*.json || status=1
done
python3 - "$dir" "$@" <<'PY'
import glob, json, os, sys
d = sys.argv[1]


def driver_ms(run):
    """Time a step after step 3 spent inside nofrag's backend calls, and the host waits among it."""
    st = run["stats"]
    if "backend_ns_per_step_after_step_3" not in st:
        return "-"
    return f'{st["backend_ns_per_step_after_step_3"] / 1e6:.2f} ({st["event_wait_ns_per_step_after_step_3"] / 1e6:.2f})'


print("job | ms a step, each run: native / nofrag default / nofrag at the cap | mean vs native: default, cap"
      " | at the cap: moves a step, calls a step, held / live"
      " | ms a step inside nofrag's driver calls (measured; host waits), each run: default / cap")
for spec in sys.argv[2:]:
    job = spec.split(":")[0]
    runs = {m: [json.load(open(p)) for p in sorted(glob.glob(os.path.join(d, f"{job}_{m}_*.json")))]
            for m in ("native", "default", "cap")}
    if not all(runs.values()):
        print(job, "| missing runs")
        continue
    ms = {m: [1000 * r["stats"]["median_step_seconds"] for r in rs] for m, rs in runs.items()}
    mean = {m: sum(v) / len(v) for m, v in ms.items()}
    s = runs["cap"][-1]["stats"]
    print(f'{job} | {" / ".join(", ".join(f"{x:.1f}" for x in ms[m]) for m in ms)}'
          f' | {mean["default"] / mean["native"]:.3f}, {mean["cap"] / mean["native"]:.3f}'
          f' | {s.get("num_remaps_per_step_after_step_3")}, {s.get("backend_calls_per_step_after_step_3")}'
          f', {s["reserved_bytes.all.peak"] / s["allocated_bytes.all.peak"]:.4f}'
          f' | {" / ".join(", ".join(driver_ms(r) for r in runs[m]) for m in ("default", "cap"))}')
PY
exit $status
