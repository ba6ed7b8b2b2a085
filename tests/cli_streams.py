#!/usr/bin/env python3
"""A multi-stream trace (FSDP, three streams) replayed: without a cap the pool holds at most 1.03x
the live peak and moves few pages, as on single-stream traces, and at a 1.02x cap nothing fails.
Before the pool asked other streams before paying for pages (and merged what that freed), this
trace held 1.035x and moved 76 pages a step. Also: the same trace with every event on one stream
holds no more than 1.5 points less, so the streams themselves cost little. And with reuse across
streams (the PyTorch front end's default), the same trace at 1.02x moves fewer pages than
without, fails nothing, and the JSON says which way it ran. With --stream-lag (each stream's work
done 64 events after it was queued, as on a GPU running behind the host), the pool must learn and
wait as it would there: host waits under the slower rule, device-side waits (and no failure at
1.02x) with reuse across streams; with no lag, neither."""
import gzip
import os
import subprocess
import sys
import tempfile

from checks import check, finish, replay_json

nofrag, trace = sys.argv[1], sys.argv[2]


def replay(path, *options):
    return replay_json(nofrag, path, *options)


free = replay(trace)
capped = replay(trace, "--capacity-factor", "1.02")
check(free["overhead_ratio"] <= 1.03, f"no cap: held / live {free['overhead_ratio']} <= 1.03")
check(free["remaps_per_step"] <= 40, f"no cap: {free['remaps_per_step']} page moves a step <= 40")
check(capped["failed_allocs"] == 0, f"1.02x cap: {capped['failed_allocs']} failed allocations")

across = replay(trace, "--reuse-across-streams", "--capacity-factor", "1.02")
check(across["reuse_across_streams"] is True and capped["reuse_across_streams"] is False,
      "the JSON names the stream rule")
check(across["failed_allocs"] == 0, f"reuse across streams, 1.02x cap: {across['failed_allocs']} failed")
check(across["remaps_per_step"] <= capped["remaps_per_step"],
      f"reuse across streams, 1.02x cap: {across['remaps_per_step']} page moves a step, "
      f"no more than {capped['remaps_per_step']} without")

check(capped["stream_lag"] == 0 and capped["calls_per_step"]["event_sync"] == 0
      and across["calls_per_step"]["stream_wait"] == 0, "no lag: the work is done when asked, no wait")
lagged = replay(trace, "--stream-lag", "64", "--capacity-factor", "1.02")
check(lagged["stream_lag"] == 64, "the JSON gives the lag")
check(lagged["calls_per_step"]["event_sync"] > 0, f"lag 64, slower rule: host waits ({lagged['calls_per_step']})")
lagged_across = replay(trace, "--stream-lag", "64", "--reuse-across-streams", "--capacity-factor", "1.02")
check(lagged_across["calls_per_step"]["stream_wait"] > 0,
      f"lag 64, reuse across streams: device-side waits ({lagged_across['calls_per_step']})")
check(lagged_across["failed_allocs"] == 0, f"lag 64, reuse across streams: {lagged_across['failed_allocs']} failed")
check(lagged_across["remaps_per_step"] <= lagged["remaps_per_step"],
      f"lag 64: reuse across streams moves {lagged_across['remaps_per_step']} pages a step, "
      f"the slower rule {lagged['remaps_per_step']}")
res = subprocess.run([nofrag, "replay", "--stream-lag", "-1", trace], capture_output=True, text=True)
check(res.returncode != 0 and "number of events" in res.stderr, "a negative lag is refused")
res = subprocess.run([nofrag, "replay", "--cuda", "0", "--stream-lag", "8", trace], capture_output=True, text=True)
check(res.returncode != 0 and "host backend only" in res.stderr, "a lag on the CUDA backend is refused")

with tempfile.TemporaryDirectory() as tmp:
    one = os.path.join(tmp, "one_stream.csv.gz")
    with gzip.open(trace, "rt") as src, gzip.open(one, "wt") as dst:
        for i, line in enumerate(src):
            if i:
                line = line.rstrip("\n").rsplit(",", 1)[0] + ",0\n"
            dst.write(line)
    single = replay(one)
check(free["overhead_ratio"] - single["overhead_ratio"] <= 0.015,
      f"three streams hold {free['overhead_ratio']}, one stream {single['overhead_ratio']}")
finish()
