#!/usr/bin/env bash
# What `cmake --install` gives a user, checked end to end: install the build into a scratch prefix,
# then build and run a program outside the tree against it through find_package (shared and
# static library) and through pkg-config, run the installed command line, and import the installed
# Python package, which must load its own copy of the library.
#   tests/install_check.sh BUILD_DIR SOURCE_DIR
set -euo pipefail
build=$(cd "$1" && pwd)
src=$(cd "$2" && pwd)
prefix="$build/install-check/prefix"
work="$build/install-check"
rm -rf "$work"
mkdir -p "$work"
cmake --install "$build" --prefix "$prefix" >"$work/install.log"

cmake -S "$src/tests/install" -B "$work/consumer" -DCMAKE_PREFIX_PATH="$prefix" >"$work/configure.log"
cmake --build "$work/consumer" >"$work/build.log"
LD_LIBRARY_PATH="$prefix/lib" "$work/consumer/consumer_shared"
"$work/consumer/consumer_static"

if command -v pkg-config >/dev/null; then
  # shellcheck disable=SC2046 # pkg-config's flags are words
  cc -std=c11 -o "$work/consumer_pc" "$src/tests/install/consumer.c" \
    $(PKG_CONFIG_PATH="$prefix/lib/pkgconfig" pkg-config --cflags --libs nofrag) -Wl,-rpath,"$prefix/lib"
  "$work/consumer_pc"
else
  echo "pkg-config missing: its check skipped"
fi

"$prefix/bin/nofrag" version
env -u NOFRAG_LIBRARY PYTHONPATH="$prefix/lib/nofrag/python" python3 -c '
import sys
import nofrag
from nofrag import _lib
path = _lib.library_path()
assert path.startswith(sys.argv[1]), path
print("python: nofrag", nofrag.version(), "from", path)' "$prefix"
echo "install_check: PASSED"
