#!/usr/bin/env bash
# Long runs: replays the long recordings in traces/long/ without a cap and at 1.02x the live peak
# and prints page moves, backend calls and driver time per window of 50 steps (bench/step_windows.py),
# to show whether they settle, stay level or creep up as a job runs. Needs the build of
# scripts/test.sh or scripts/replay-bundled.sh (build/nofrag).
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x build/nofrag ] || { echo "build/nofrag missing: run scripts/replay-bundled.sh first" >&2; exit 1; }
for trace in traces/long/*.csv.gz; do
  for cap in "" "--capacity-factor 1.02"; do
    # shellcheck disable=SC2086
    build/nofrag replay --json --per-step $cap "$trace" | python3 bench/step_windows.py 50
  done
done
