#!/usr/bin/env python3
"""`nofrag replay --hold-near-live` on a real trace: under a cap far above the live peak (the PyTorch
front end's default, the device's free memory) every figure equals the uncapped replay's, while the
same cap without the option fills with pages; the option is refused without a cap."""
import subprocess
import sys

from checks import check, finish, replay_json

nofrag, trace = sys.argv[1], sys.argv[2]


def replay(*options):
    return replay_json(nofrag, trace, *options)


free = replay()
held = replay("--capacity", "139G", "--hold-near-live")
filled = replay("--capacity", "139G")
for key in ("peak_mapped_bytes", "backend_calls", "remaps", "failed_allocs", "peak_virtual_mapped_bytes"):
    check(held[key] == free[key], f"{key}: {held[key]} under a loose cap holding near live, {free[key]} without a cap")
check(held["hold_near_live"] is True and filled["hold_near_live"] is False and free["hold_near_live"] is False,
      "the JSON says whether the cap was held near live")
check(held["overhead_ratio"] <= 1.03, f"held / live {held['overhead_ratio']} <= 1.03")
check(filled["peak_mapped_bytes"] > held["peak_mapped_bytes"],
      f"filling the cap holds more ({filled['peak_mapped_bytes']} vs {held['peak_mapped_bytes']})")
check(filled["failed_allocs"] == 0 and held["failed_allocs"] == 0, "no failed allocation")

bad = subprocess.run([nofrag, "replay", "--hold-near-live", trace], capture_output=True, text=True)
check(bad.returncode == 2 and "--hold-near-live needs --capacity" in bad.stderr,
      "--hold-near-live without a cap is refused")

finish()
