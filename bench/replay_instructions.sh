#!/usr/bin/env bash
# Instructions spent in the replay loop (replay_run) per trace event, counted by callgrind: a
# repeatable measure of bookkeeping cost on a shared, noisy machine. Compares two nofrag binaries.
# usage: bench/replay_instructions.sh BASE_NOFRAG NEW_NOFRAG [replay options]
set -euo pipefail
base=$1 new=$2
shift 2
cd "$(dirname "$0")/.."
printf '%-18s %12s %12s %9s\n' trace base_ins/ev new_ins/ev new/base
for t in traces/*.csv.gz; do
  name=$(basename "$t" .csv.gz)
  events=$(zcat "$t" | tail -n +2 | grep -vc "allocate failure" || true)
  counts=()
  for bin in "$base" "$new"; do
    out=$(mktemp)
    valgrind --tool=callgrind --toggle-collect=replay_run --callgrind-out-file="$out" \
      "$bin" replay "$@" "$t" >/dev/null 2>&1
    counts+=("$(grep -m1 '^totals:' "$out" | awk '{print $2}')")
    rm -f "$out"
  done
  awk -v n="$name" -v e="$events" -v b="${counts[0]}" -v c="${counts[1]}" \
    'BEGIN { printf "%-18s %12.0f %12.0f %9.2f\n", n, b / e, c / e, c / b }'
done
