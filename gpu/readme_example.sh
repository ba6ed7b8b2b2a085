#!/usr/bin/env bash
# Runs the README's "Using nofrag with PyTorch" example exactly as printed there, as a new user
# would paste it, and checks that CUDA IPC is refused as the README says.
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH=$PWD/python NOFRAG_LIBRARY=${NOFRAG_LIBRARY:-$PWD/build/libnofrag.so}
python3 - <<'PY'
import re
text = open("README.md").read()
section = text[text.index("## Using nofrag with PyTorch"):]
code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
open("/tmp/readme_example.py", "w").write(code)
PY
python3 /tmp/readme_example.py
python3 - <<'PY'
import nofrag.torch
nofrag.torch.enable()
import torch
x = torch.ones(1024, device="cuda")
try:
    x.untyped_storage()._share_cuda_()
    print("CUDA IPC: a handle was exported (the README's claim is wrong)")
except Exception as e:  # expected: the driver refuses to export virtual-memory allocations
    print("CUDA IPC refused as documented:", type(e).__name__, str(e).splitlines()[0][:120])
PY
