#!/usr/bin/env bash
# The main job: set up, build, and replay the bundled training traces through nofrag, with and
# without a physical cap, and search each trace's minimum capacity.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup-debian.sh
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build build -j"$(nproc)" >/dev/null
echo "== no cap =="
build/nofrag replay --min-capacity traces/*.csv.gz
echo
echo "== cap of 1.02 x peak live, on real host memory: every block's bytes checked while pages move =="
build/nofrag replay --real-memory --capacity-factor 1.02 traces/*.csv.gz
echo
echo "== cap of 1.02 x peak live, memory reused across streams (the PyTorch front end's default; only traces with several streams change) =="
build/nofrag replay --reuse-across-streams --capacity-factor 1.02 traces/*.csv.gz
echo
echo "== cap of 1.02 x peak live with pairs of pages inside blocks of 128+ pages (--pair-pages 128, an option: fewer page moves, some memory) =="
build/nofrag replay --pair-pages 128 --capacity-factor 1.02 traces/*.csv.gz
echo
echo "== issue 3's goals, trace by trace (C API defaults) =="
python3 bench/placement_goals.py --nofrag build/nofrag traces/*.csv.gz
