#!/usr/bin/env bash
# Records training traces on the GPU for replay, with PyTorch's own peaks beside them.
#   NOFRAG_SEED=2 gpu/record.sh gpt2_train_eval:30 gpt2_generate:12 ...
# For each NAME:STEPS: one run under PyTorch's default allocator with memory history on (the
# trace), and one under expandable segments (its peaks only). Needs the recording script at
# .rec/workloads.py (../shared/recording/workloads.py; it reads NOFRAG_SEED). Writes
# $OUT/recorded.tar.gz (default gpu-results/): NAME.csv.gz and NAME.steps ready for traces/, and
# NAME.default.json / NAME.expandable.json with PyTorch's memory statistics. The jobs of
# gpu/workloads_more.py (its JOBS table) are recorded the same way.
set -uo pipefail
cd "$(dirname "$0")/.."
RESULTS=${OUT:-gpu-results}
work=$(mktemp -d)
mkdir -p "$RESULTS" "$work/out"
for spec in "$@"; do
  w=${spec%%:*}
  steps=${spec##*:}
  # A job named in gpu/workloads_more.py's JOBS table runs there (read as text: importing the
  # script would import torch), any other with the shared recording script.
  if grep -q "^JOBS = .*\"$w\":" gpu/workloads_more.py; then script=gpu/workloads_more.py; else script=.rec/workloads.py; fi
  [ -f "$script" ] || { echo "no $script" >&2; exit 1; }
  echo "== $w, $steps steps, seed ${NOFRAG_SEED:-0}"
  timeout 240 python3 "$script" "$w" "$steps" "$work" --record 2>&1 | tail -1
  PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True timeout 240 python3 "$script" "$w" "$steps" "$work" \
    2>&1 | tail -1
  python3 gpu/convert_trace.py "$work/$w.trace.csv.gz" "$work/$w.marks.json" "$work/out" || exit 1
  cp "$work/$w.default.json" "$work/$w.expandable.json" "$work/out/"
  # Archived after every job, so that a call cut off by a time limit keeps the jobs it finished.
  tar -czf "$RESULTS/recorded.tar.gz" -C "$work/out" .
done
ls -la "$work/out"
