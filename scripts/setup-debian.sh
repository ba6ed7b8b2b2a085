#!/usr/bin/env bash
# Installs what nofrag needs to build and test on Debian or Ubuntu: a C compiler, CMake, zlib
# (compressed traces), jemalloc (the bookkeeping benchmark's reference) and Python 3 (the PyTorch
# front end's tests). Does nothing when everything is already there.
set -euo pipefail
packages=(build-essential cmake zlib1g-dev libjemalloc-dev python3 pkg-config)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0
echo "setup: installing ${missing[*]}" >&2
as_root=()
[ "$(id -u)" -eq 0 ] || as_root=(sudo)
export DEBIAN_FRONTEND=noninteractive
"${as_root[@]}" apt-get update -qq
"${as_root[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
