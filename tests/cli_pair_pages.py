#!/usr/bin/env python3
"""`nofrag replay --pair-pages N` on a real trace with large blocks: pairs are made, fewer pages move
at a 1.02x cap than with single pages and none fails, no byte changes under real memory, the
invariants hold throughout, and without a cap held memory stays within 1.03x the live peak. Bad
values and --cuda-pool are refused."""
import subprocess
import sys

from checks import check, finish, replay_json

nofrag, trace = sys.argv[1], sys.argv[2]

singles = replay_json(nofrag, trace, "--capacity-factor", "1.02")
pairs = replay_json(nofrag, trace, "--capacity-factor", "1.02", "--pair-pages", "128", "--real-memory", "--check", "500")
check(singles["pairs_made"] == 0 and singles["pair_min_pages"] == 0, "no pairs by default")
check(pairs["pairs_made"] > 100 and pairs["pair_min_pages"] == 128, f"pairs made: {pairs['pairs_made']}")
check(pairs["failed_allocs"] == 0 and singles["failed_allocs"] == 0, "no failed allocation at 1.02x")
check(pairs["remaps"] < singles["remaps"], f"remaps with pairs {pairs['remaps']} < singles {singles['remaps']}")
check(pairs["backend_calls"] < singles["backend_calls"],
      f"backend calls with pairs {pairs['backend_calls']} < singles {singles['backend_calls']}")
check(pairs["corrupt_words"] == 0 and pairs["checked_words"] > 0, "no byte changed while pages and pairs moved")
free = replay_json(nofrag, trace, "--pair-pages", "128")
check(free["failed_allocs"] == 0 and free["overhead_ratio"] <= 1.03, f"no cap: held / live {free['overhead_ratio']}")

for bad in ("-1", "x", "4294967296"):
    r = subprocess.run([nofrag, "replay", "--pair-pages", bad, trace], capture_output=True, text=True)
    check(r.returncode == 2 and "is not a number of pages" in r.stderr, f"--pair-pages {bad} refused")
r = subprocess.run([nofrag, "replay", "--cuda-pool", "0", "--pair-pages", "128", trace], capture_output=True, text=True)
check(r.returncode != 0 and "with --cuda-pool the driver places blocks" in r.stderr, "--pair-pages refused with --cuda-pool")

finish()
