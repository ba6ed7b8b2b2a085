#!/usr/bin/env bash
# Set up, build and run every test: the C tests through CTest (GPU tests skip without a GPU) and
# the Python front end's tests.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup-debian.sh
cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build build -j"$(nproc)"
(cd build && ctest --output-on-failure -j"$(nproc)")
if [ -d python/tests ]; then
  NOFRAG_LIBRARY="$PWD/build/libnofrag.so" python3 -m unittest discover -s python/tests -t python -v
fi
