#!/usr/bin/env bash
# Every GPU check, in one go (about 5-8 minutes on an H100). Writes logs and JSON under $OUT
# (default gpu-results/). Run from the repository root on a machine with a GPU, nvcc and PyTorch.
#   gpu/run-all.sh              everything
#   gpu/run-all.sh record       also record new traces (needs workloads.py in .rec/)
#   ONLY="hooks multi" gpu/run-all.sh   only those sections (see `want` below)
#   TRACES="vit_fixed llama_lora" ...   the trace sections on those traces only
#   ONLY="autotune" gpu/run-all.sh      torch.compile's max-autotune mode (minutes; only when named)
# No section reads traces/long/ (20 MiB) or traces/heldout/ (12 MiB): where the tree is shipped to
# a GPU machine under a size limit (the repository is about 87 MiB, the device tool takes 64),
# leave them behind.
set -uo pipefail
cd "$(dirname "$0")/.."
RESULTS=${OUT:-gpu-results}
OUT="$RESULTS/detail"   # everything but the traces goes into one archive at the end
mkdir -p "$OUT"
status=0
step() { echo; echo "== $* =="; }
# ONLY="replay hooks ..." runs only those sections (names on the `if want` lines below).
want() { [ -z "${ONLY:-}" ] || [[ " $ONLY " == *" $1 "* ]]; }
export PYTHONUNBUFFERED=1 NOFRAG_LIBRARY="$PWD/build-gpu/libnofrag.so"

step build
cmake -S . -B build-gpu -DCMAKE_BUILD_TYPE=Release -DNOFRAG_GPU_TESTS=ON \
  -DCMAKE_CUDA_COMPILER="$(command -v nvcc || echo /usr/local/cuda/bin/nvcc)" >/dev/null || exit 1
cmake --build build-gpu -j"$(nproc)" >/dev/null || exit 1
nvidia-smi --query-gpu=name,memory.total,memory.used,driver_version --format=csv,noheader

if want ctest; then
step "CTest (C tests, CUDA backend test, 1M-operation stress test)"
(cd build-gpu && ctest --output-on-failure) 2>&1 | tee "$OUT/ctest.log" | tail -25 || status=1
grep -q "100% tests passed" "$OUT/ctest.log" || status=1

fi
if want memcheck; then
step "compute-sanitizer memcheck on the stress test (30k operations)"
compute-sanitizer --tool memcheck --error-exitcode 9 build-gpu/gpu/gpu_stress 30000 4 128 \
  2>&1 | tee "$OUT/memcheck.log" | tail -4 || status=1
grep -q "ERROR SUMMARY: 0 errors" "$OUT/memcheck.log" || status=1
compute-sanitizer --tool memcheck --error-exitcode 9 build-gpu/gpu/gpu_stress 30000 4 128 0 0 across \
  2>&1 | tee "$OUT/memcheck_across.log" | tail -4 || status=1
grep -q "ERROR SUMMARY: 0 errors" "$OUT/memcheck_across.log" || status=1
# Pairs of pages (nf_config.pair_min_pages = 2): two-page handles mapped, moved and unmapped
# whole, under both stream rules.
for rule in "" across; do
  compute-sanitizer --tool memcheck --error-exitcode 9 build-gpu/gpu/gpu_stress 30000 4 128 0 0 $rule pairs \
    2>&1 | tee "$OUT/memcheck_pairs$rule.log" | tail -4 || status=1
  grep -q "ERROR SUMMARY: 0 errors" "$OUT/memcheck_pairs$rule.log" || status=1
done

fi
# The bundled traces, for the replay, cost and replay8m sections (set here so that any of them
# runs alone under ONLY): gunzipped copies where this build has no zlib.
# TRACES="gpt2_small_accum_ckpt vit_fixed" limits them to those names.
traces=(traces/*.csv.gz)
if [ -n "${TRACES:-}" ]; then
  traces=()
  for name in $TRACES; do traces+=("traces/$name.csv.gz"); done
fi
if ! build-gpu/nofrag replay --json traces/vit_fixed.csv.gz >/dev/null 2>&1; then
  echo "(this build has no zlib: replaying gunzipped copies)"
  mkdir -p /tmp/nofrag-traces
  for f in "${traces[@]}"; do
    gunzip -c "$f" >"/tmp/nofrag-traces/$(basename "$f" .gz)"
    cp "${f%.csv.gz}.steps" /tmp/nofrag-traces/
  done
  traces=(/tmp/nofrag-traces/*.csv)
fi

if want replay; then
step "bundled traces: host replay vs CUDA replay (peak mapped)"
for t in "${traces[@]}"; do
  # A replay that fails still prints one line, so the pairs below stay aligned.
  build-gpu/nofrag replay --json "$t" || echo "{\"trace\": \"$t\", \"peak_mapped_bytes\": -1, \"failed_allocs\": -1, \"replay_seconds\": 0}"
  build-gpu/nofrag replay --json --cuda 0 "$t" || echo "{\"trace\": \"$t\", \"peak_mapped_bytes\": -1, \"failed_allocs\": -1, \"replay_seconds\": 0}"
done | tee "$OUT/replay_host_vs_cuda.jsonl" >/dev/null
python3 - "$OUT/replay_host_vs_cuda.jsonl" <<'PY' || status=1
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
ok = True
for host, cuda in zip(rows[::2], rows[1::2]):
    diff = abs(host["peak_mapped_bytes"] - cuda["peak_mapped_bytes"])
    good = diff <= 2 << 20 and cuda["failed_allocs"] == 0
    ok &= good
    # Page moves are printed, not checked: the CUDA backend learns when work is done from real
    # events, which can rank idle pages differently from the host backend's instant completion.
    print(f'{host["trace"]:18s} host {host["peak_mapped_bytes"]/2**30:.3f} GiB  cuda {cuda["peak_mapped_bytes"]/2**30:.3f} GiB'
          f'  diff {diff} B  remaps host {host.get("remaps", -1)} cuda {cuda.get("remaps", -1)}'
          f'  cuda replay {cuda["replay_seconds"]:.2f} s  {"ok" if good else "MISMATCH"}')
sys.exit(0 if ok else 1)
PY

fi
if want vmm; then
step "driver call cost by size (gpu/vmm_cost.cu: 1-256 pages per call)"
build-gpu/gpu/gpu_vmm_cost | tee "$OUT/vmm_cost.jsonl" | tail -2

fi
if want cost; then
step "the cost model against the driver: CUDA replays, driver time a step after step 3, estimated vs measured"
for t in "${traces[@]}"; do
  for cap in "" "--capacity-factor 1.02"; do
    # shellcheck disable=SC2086 # cap: zero or two words
    build-gpu/nofrag replay --json --cuda 0 $cap "$t" || echo "{\"trace\": \"$t\", \"failed\": true}"
  done
done >"$OUT/replay_cost.jsonl"
python3 - "$OUT/replay_cost.jsonl" <<'PY' || status=1
import json, sys
rows = [json.loads(line) for line in open(sys.argv[1])]
print(f'{"trace":24s} {"no cap: est":>12s} {"measured us":>12s} {"1.02x: est":>12s} {"measured us":>12s}'
      "  remaps a step at 1.02x")
est = measured = 0.0
bad = 0
for nocap, cap in zip(rows[::2], rows[1::2]):
    if nocap.get("failed") or cap.get("failed"):
        bad += 1
        print(nocap["trace"], "replay failed")
        continue
    print(f'{nocap["trace"]:24s} {nocap["est_driver_us_per_step"]:12.1f} {nocap["backend_us_per_step"]:12.1f}'
          f' {cap["est_driver_us_per_step"]:12.1f} {cap["backend_us_per_step"]:12.1f}  {cap["remaps_per_step"]:.1f}')
    for r in (nocap, cap):
        est += r["est_driver_us_total"]
        measured += r["backend_us_total"]
print(f"all replays: estimated {est / 1e3:.1f} ms, measured {measured / 1e3:.1f} ms of driver time"
      f" (measured / estimated {measured / est if est else 0:.2f})")
sys.exit(1 if bad else 0)
PY

fi
if want replay8m; then
step "8 MiB pages: host replay vs CUDA replay (peak mapped)"
for t in "${traces[@]:0:2}"; do
  build-gpu/nofrag replay --json --page-size 8M "$t"
  build-gpu/nofrag replay --json --page-size 8M --cuda 0 "$t"
done | tee "$OUT/replay_8m_host_vs_cuda.jsonl" | python3 -c '
import json, sys
rows = [json.loads(l) for l in sys.stdin]
bad = 0
for h, c in zip(rows[::2], rows[1::2]):
    same = h["peak_mapped_bytes"] == c["peak_mapped_bytes"] and c["failed_allocs"] == 0 and h["backend_calls"] == c["backend_calls"]
    bad += not same
    print(h["trace"], "host", h["peak_mapped_bytes"], h["backend_calls"], "cuda", c["peak_mapped_bytes"], c["backend_calls"], "ok" if same else "MISMATCH")
sys.exit(1 if bad else 0)' || status=1

fi
if want pairs; then
step "pairs of pages (--pair-pages 128): host replay vs CUDA replay, then driver time at a 1.02x cap with and without pairs (GPT-2 with pairs: the gpt2 section)"
for t in "${traces[@]}"; do
  for args in "--pair-pages 128" "--pair-pages 128 --cuda 0" "--capacity-factor 1.02 --cuda 0" \
              "--capacity-factor 1.02 --pair-pages 128 --cuda 0"; do
    # shellcheck disable=SC2086 # args: several words
    build-gpu/nofrag replay --json $args "$t" || echo "{\"trace\": \"$t\", \"failed\": true}"
  done
done >"$OUT/replay_pairs.jsonl"
python3 - "$OUT/replay_pairs.jsonl" <<'PY' || status=1
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
bad = 0
print(f"{'trace':24s} {'held host':>10s} {'held cuda':>10s}   at 1.02x on the GPU, singles -> pairs: remaps a step, driver us a step")
for host, cuda, single, pair in zip(rows[::4], rows[1::4], rows[2::4], rows[3::4]):
    if any(r.get("failed") for r in (host, cuda, single, pair)):
        bad += 1
        print(host["trace"], "replay failed")
        continue
    ok = (host["peak_mapped_bytes"] == cuda["peak_mapped_bytes"] and cuda["failed_allocs"] == 0
          and single["failed_allocs"] == 0 and pair["failed_allocs"] == 0)
    bad += not ok
    f = lambda r, k: "-" if r.get(k) is None else f"{r[k]:.1f}"
    print(f"{host['trace']:24s} {host['peak_mapped_bytes'] / 2**30:10.3f} {cuda['peak_mapped_bytes'] / 2**30:10.3f}"
          f"   {f(single, 'remaps_per_step')} -> {f(pair, 'remaps_per_step')}, {f(single, 'backend_us_per_step')} ->"
          f" {f(pair, 'backend_us_per_step')}  {'ok' if ok else 'MISMATCH'}")
sys.exit(1 if bad else 0)
PY
fi
if want gpt2; then
step "GPT-2, 100 steps: native allocator vs nofrag (default cap, then a tight cap)"
python3 gpu/gpt2_losses.py native "$OUT/gpt2_native.json" 2>&1 | grep -v Warning | tail -2
python3 gpu/gpt2_losses.py nofrag "$OUT/gpt2_nofrag.json" 2>&1 | grep -v Warning | tail -2
peak=$(python3 -c "import json;print(json.load(open('$OUT/gpt2_native.json'))['stats']['allocated_bytes.all.peak'])")
NOFRAG_CAPACITY=$((peak * 102 / 100)) python3 gpu/gpt2_losses.py nofrag "$OUT/gpt2_nofrag_tight.json" 2>&1 \
  | grep -v Warning | tail -2
NOFRAG_PAGE_SIZE=8M NOFRAG_CAPACITY=$((peak * 102 / 100)) python3 gpu/gpt2_losses.py nofrag "$OUT/gpt2_nofrag_tight_8m.json" 2>&1 \
  | grep -v Warning | tail -2
# Pairs of pages (NOFRAG_PAIR_PAGES=128, an option) at the tight cap and under the defaults.
NOFRAG_PAIR_PAGES=128 NOFRAG_CAPACITY=$((peak * 102 / 100)) python3 gpu/gpt2_losses.py nofrag \
  "$OUT/gpt2_nofrag_tight_pairs.json" 2>&1 | grep -v Warning | tail -2
NOFRAG_PAIR_PAGES=128 python3 gpu/gpt2_losses.py nofrag "$OUT/gpt2_nofrag_pairs.json" 2>&1 | grep -v Warning | tail -2
python3 gpu/compare_losses.py "$OUT/gpt2_native.json" "$OUT/gpt2_nofrag.json" "$OUT/gpt2_nofrag_tight.json" \
  "$OUT/gpt2_nofrag_tight_8m.json" "$OUT/gpt2_nofrag_tight_pairs.json" "$OUT/gpt2_nofrag_pairs.json" || status=1

fi
if want models; then
step "ResNet-50 multi-scale, T5 with beam search, GPT-2 with batches prefetched on a second stream: native vs nofrag (default cap, then a tight cap)"
for job in resnet_multiscale t5_seq2seq gpt2_prefetch; do
  python3 gpu/model_losses.py $job native "$OUT/${job}_native.json" 2>&1 | grep -v Warning | tail -1
  python3 gpu/model_losses.py $job nofrag "$OUT/${job}_nofrag.json" 2>&1 | grep -v Warning | tail -1
  peak=$(python3 -c "import json;print(json.load(open('$OUT/${job}_native.json'))['stats']['allocated_bytes.all.peak'])")
  NOFRAG_CAPACITY=$((peak * 102 / 100)) python3 gpu/model_losses.py $job nofrag "$OUT/${job}_nofrag_tight.json" 2>&1 \
    | grep -v Warning | tail -1
  python3 gpu/compare_losses.py "$OUT/${job}_native.json" "$OUT/${job}_nofrag.json" "$OUT/${job}_nofrag_tight.json" \
    || status=1
done
# The job with two streams, also with reuse across streams off (memory crosses streams only once
# all their work is done; the default where PyTorch lacks the record-stream callback).
NOFRAG_REUSE_ACROSS_STREAMS=0 python3 gpu/model_losses.py gpt2_prefetch nofrag "$OUT/gpt2_prefetch_nofrag_noacross.json" \
  2>&1 | grep -v Warning | tail -1
python3 gpu/compare_losses.py "$OUT/gpt2_prefetch_native.json" "$OUT/gpt2_prefetch_nofrag_noacross.json" || status=1
python3 gpu/memory_table.py native="$OUT/gpt2_prefetch_native.json" nofrag="$OUT/gpt2_prefetch_nofrag.json" \
  "nofrag, no reuse across streams=$OUT/gpt2_prefetch_nofrag_noacross.json" | tee "$OUT/gpt2_prefetch_streams.txt"

fi
if want record_check; then
step "nofrag.record on a real job: record with PyTorch's allocator, replay, compare"
python3 gpu/record_check.py build-gpu/nofrag "$OUT" 2>&1 | grep -v Warning | tail -3 | tee "$OUT/record_check.log" || status=1
[ "$(grep -c ": ok$" "$OUT/record_check.log")" = 2 ] || status=1

fi
if want readme; then
step "the README's PyTorch example, as printed"
NOFRAG_LIBRARY="$PWD/build-gpu/libnofrag.so" gpu/readme_example.sh 2>&1 | tee "$OUT/readme_example.log" | tail -3
grep -q "page moves" "$OUT/readme_example.log" || status=1

fi
if want hooks; then
step "PyTorch hooks: record_stream, empty_cache, set_per_process_memory_fraction"
NOFRAG_LIBRARY="$PWD/build-gpu/libnofrag.so" python3 gpu/hooks_check.py 2>&1 | tee "$OUT/hooks.log" | grep -v Warning | tail -9 || status=1
grep -q "hooks_check: PASSED" "$OUT/hooks.log" || status=1
NOFRAG_REUSE_ACROSS_STREAMS=0 NOFRAG_LIBRARY="$PWD/build-gpu/libnofrag.so" python3 gpu/hooks_check.py 2>&1 \
  | tee "$OUT/hooks_noacross.log" | grep -E "record_stream|side stream|host wait|hooks_check" || status=1
grep -q "hooks_check: PASSED" "$OUT/hooks_noacross.log" || status=1

fi
if want compile; then
step "torch.compile (default mode) under nofrag: loss and gradient as eager's"
python3 gpu/compile_check.py 2>&1 | grep -v -i warn | tail -3 | tee "$OUT/compile.log" || status=1
grep -q "compile_check: PASSED" "$OUT/compile.log" || status=1

fi
if want cudapool; then
step "CUDA's own memory pool (backend cuda-pool) beside nofrag's placement: the bundled traces replayed on the GPU through each, no cap and at 1.02x the live peak; GPT-2 trained on it"
for t in "${traces[@]}"; do
  for backend in cuda cuda-pool; do
    for cap in "" "--capacity-factor 1.02"; do
      build-gpu/nofrag replay --json --$backend 0 $cap "$t" | sed "s/^{/{\"backend\": \"$backend\", \"cap\": \"${cap:+1.02}\", /" \
        || echo "{\"trace\": \"$t\", \"backend\": \"$backend\", \"cap\": \"${cap:+1.02}\", \"failed\": true}"
    done
  done
done >"$OUT/replay_cuda_pool.jsonl"
python3 - "$OUT/replay_cuda_pool.jsonl" <<'PY' | tee "$OUT/replay_cuda_pool.txt" || status=1
import json, sys
rows = {}
for line in open(sys.argv[1]):
    r = json.loads(line)
    rows.setdefault(r["trace"], {})[(r["backend"], r["cap"])] = r
print(f'{"trace":32} {"nofrag held/live":>17} {"cuda-pool held/live":>20} {"failed at 1.02x: nofrag":>24} {"cuda-pool":>10}')
bad = False
for name, by in rows.items():
    def ratio(key):
        r = by.get(key)
        return "failed" if not r or r.get("failed") else f'{r["peak_mapped_bytes"] / r["peak_live_bytes"]:.4f}'
    def fails(key):
        r = by.get(key)
        return "-" if not r or r.get("failed") else str(r["failed_allocs"])
    bad |= any(not r or r.get("failed") for r in by.values())
    print(f'{name:32} {ratio(("cuda", "")):>17} {ratio(("cuda-pool", "")):>20} {fails(("cuda", "1.02")):>24} {fails(("cuda-pool", "1.02")):>10}')
sys.exit(1 if bad else 0)
PY
python3 gpu/gpt2_losses.py native "$OUT/gpt2_native.json" 2>&1 | grep -v Warning | tail -1
NOFRAG_BACKEND=cuda-pool python3 gpu/gpt2_losses.py nofrag "$OUT/gpt2_cuda_pool.json" 2>&1 | grep -v Warning | tail -2
python3 gpu/compare_losses.py "$OUT/gpt2_native.json" "$OUT/gpt2_cuda_pool.json" || status=1
python3 gpu/memory_table.py native="$OUT/gpt2_native.json" cuda-pool="$OUT/gpt2_cuda_pool.json" | tee "$OUT/gpt2_cuda_pool.txt"

fi
if want devicefull; then
step "the device filled by memory taken outside nofrag: idle pages serve, failures are clean, the reserve holds, CUDA's pool likewise"
for mode in full reserve cuda-pool; do
  python3 gpu/device_full_check.py $mode 2>&1 | grep -v -i warn | tee "$OUT/device_full_$mode.log" | tail -12
  grep -q "device_full_check $mode: PASSED" "$OUT/device_full_$mode.log" || status=1
done

fi
if want phase; then
step "nofrag.phase() around an evaluation pass on GPT-2: held memory back to the training level and kept there, losses as without it"
python3 gpu/phase_check.py plain 2>&1 | grep -v -i warn | tee "$OUT/phase_plain.log" | tail -2
python3 gpu/phase_check.py phase 2>&1 | grep -v -i warn | tee "$OUT/phase_phase.log" | tail -2
grep -q "phase_check phase: PASSED" "$OUT/phase_phase.log" || status=1
python3 - "$OUT/phase_plain.log" "$OUT/phase_phase.log" <<'PY' || status=1
import json, sys
runs = [json.loads(next(l for l in open(p) if l.startswith("{"))) for p in sys.argv[1:]]
same = runs[0]["losses"] == runs[1]["losses"]
print(f"losses identical with and without the phase: {same}")
sys.exit(0 if same else 1)
PY

fi
if want graphs; then
step "CUDA graphs under nofrag: captured into pools of their own, replays right, no other tensor touched, pools released"
for mode in capture compile others train; do
  python3 gpu/graph_check.py $mode 2>&1 | grep -v -i warn | tail -3 | tee "$OUT/graphs_$mode.log" || status=1
  grep -q "graph_check $mode: PASSED" "$OUT/graphs_$mode.log" || status=1
done

fi
# Not in a plain run (ONLY="autotune" runs it): max-autotune benchmarks kernels first, which takes
# minutes even for this small model. AUTOTUNE_S bounds it (default 420 s).
if [ -n "${ONLY:-}" ] && want autotune; then
step "torch.compile (max-autotune-no-cudagraphs) under nofrag: loss and gradient as eager's"
MODE=max-autotune-no-cudagraphs timeout "${AUTOTUNE_S:-420}" python3 gpu/compile_check.py 2>&1 | grep -v -i warn \
  | tail -3 | tee "$OUT/compile_autotune.log" || status=1
grep -q "compile_check: PASSED" "$OUT/compile_autotune.log" || { echo "(not passed, or cut off by AUTOTUNE_S)"; status=1; }

fi
if want multi; then
gpus=$(nvidia-smi -L | wc -l)
if [ "$gpus" -ge 2 ]; then
  step "Tensors copied between GPUs of one process (default peer access, then granted from the start)"
  python3 gpu/peer_check.py 2>&1 | tee "$OUT/peer.log" | tail -4
  grep -q "peer_check: PASSED" "$OUT/peer.log" || status=1
  NOFRAG_PEER_ACCESS=1 python3 gpu/peer_check.py 2>&1 | tee "$OUT/peer_always.log" | tail -1
  grep -q "peer_check: PASSED" "$OUT/peer_always.log" || status=1
  step "DDP under torchrun on $gpus GPUs: native vs nofrag losses"
  torchrun --standalone --nproc_per_node="$gpus" gpu/ddp_losses.py native "$OUT/ddp_native.json" 2>&1 | grep -E "final loss|Error" | tail -2
  torchrun --standalone --nproc_per_node="$gpus" gpu/ddp_losses.py nofrag "$OUT/ddp_nofrag.json" 2>&1 | grep -E "final loss|Error" | tail -2
  python3 gpu/compare_losses.py "$OUT/ddp_native.json" "$OUT/ddp_nofrag.json" || status=1
  # 8 MiB pages: a quarter of the driver calls, to tell their cost from the rest of a step's time.
  NOFRAG_PAGE_SIZE=8M torchrun --standalone --nproc_per_node="$gpus" gpu/ddp_losses.py nofrag "$OUT/ddp_nofrag_8m.json" \
    2>&1 | grep -E "final loss|Error" | tail -2
  python3 gpu/compare_losses.py "$OUT/ddp_native.json" "$OUT/ddp_nofrag_8m.json" || status=1
  # CUDA's own memory pool under nofrag's books (backend cuda-pool).
  NOFRAG_BACKEND=cuda-pool torchrun --standalone --nproc_per_node="$gpus" gpu/ddp_losses.py nofrag \
    "$OUT/ddp_cuda_pool.json" 2>&1 | grep -E "final loss|Error" | tail -2
  python3 gpu/compare_losses.py "$OUT/ddp_native.json" "$OUT/ddp_cuda_pool.json" || status=1
  step "FSDP under torchrun on $gpus GPUs: native vs nofrag losses"
  torchrun --standalone --nproc_per_node="$gpus" gpu/ddp_losses.py native "$OUT/fsdp_native.json" fsdp 2>&1 | grep -E "final loss|Error" | tail -2
  torchrun --standalone --nproc_per_node="$gpus" gpu/ddp_losses.py nofrag "$OUT/fsdp_nofrag.json" fsdp 2>&1 | grep -E "final loss|Error" | tail -2
  python3 gpu/compare_losses.py "$OUT/fsdp_native.json" "$OUT/fsdp_nofrag.json" || status=1
  # Pairs of pages (an option), in every block of two pages or more: FSDP's streams over handles of two pages.
  NOFRAG_PAIR_PAGES=2 torchrun --standalone --nproc_per_node="$gpus" gpu/ddp_losses.py nofrag \
    "$OUT/fsdp_nofrag_pairs.json" fsdp 2>&1 | grep -E "final loss|Error" | tail -2
  python3 gpu/compare_losses.py "$OUT/fsdp_native.json" "$OUT/fsdp_nofrag_pairs.json" || status=1
  # Reuse across streams off: the rule used where PyTorch lacks the record-stream callback.
  NOFRAG_REUSE_ACROSS_STREAMS=0 torchrun --standalone --nproc_per_node="$gpus" gpu/ddp_losses.py nofrag \
    "$OUT/fsdp_nofrag_noacross.json" fsdp 2>&1 | grep -E "final loss|Error" | tail -2
  python3 gpu/compare_losses.py "$OUT/fsdp_native.json" "$OUT/fsdp_nofrag_noacross.json" || status=1
  step "FSDP2 and tensor parallelism under torchrun on $gpus GPUs: native vs nofrag losses"
  for wrapper in fsdp2 tp; do
    for mode in native nofrag; do
      torchrun --standalone --nproc_per_node="$gpus" gpu/ddp_losses.py $mode "$OUT/${wrapper}_$mode.json" $wrapper \
        2>&1 | grep -E "final loss|Error" | tail -2
    done
    python3 gpu/compare_losses.py "$OUT/${wrapper}_native.json" "$OUT/${wrapper}_nofrag.json" || status=1
  done
  python3 gpu/memory_table.py native="$OUT/fsdp_native.json" nofrag="$OUT/fsdp_nofrag.json" \
    "nofrag, no reuse across streams=$OUT/fsdp_nofrag_noacross.json" ddp_native="$OUT/ddp_native.json" \
    ddp_nofrag="$OUT/ddp_nofrag.json" ddp_nofrag_8m_pages="$OUT/ddp_nofrag_8m.json" ddp_cuda_pool="$OUT/ddp_cuda_pool.json" \
    | tee "$OUT/fsdp_streams.txt"
fi
fi

if want latency; then
step "allocation latency through PyTorch (us per torch.empty + del)"
python3 gpu/latency.py native 2>&1 | tail -1 | tee "$OUT/latency.txt"
python3 gpu/latency.py nofrag 2>&1 | tail -2 | tee -a "$OUT/latency.txt"

fi
if [ "${1:-}" = record ] && [ -f .rec/workloads.py ]; then
  step "recording traces"
  mkdir -p /tmp/rec
  for spec in ${WORKLOADS:-gpt2_accum_ckpt:60 gpt2_train_eval:30 gpt2_generate:12}; do
    w=${spec%%:*}
    timeout 300 python3 .rec/workloads.py "$w" "${spec##*:}" /tmp/rec --record 2>&1 | tail -1
    python3 gpu/convert_trace.py "/tmp/rec/$w.trace.csv.gz" "/tmp/rec/$w.marks.json" "$RESULTS/traces"
    cp "/tmp/rec/$w.default.json" "$OUT/" 2>/dev/null
  done
fi
tar -czf "$RESULTS/detail.tar.gz" -C "$RESULTS" detail && rm -rf "$OUT"
echo
echo "run-all: $([ $status -eq 0 ] && echo PASSED || echo FAILED)"
exit $status
