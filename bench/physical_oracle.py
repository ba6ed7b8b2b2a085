#!/usr/bin/env python3
"""How many page moves does a virtual layout force, whichever physical page backs each place?

Reads a layout log (`nofrag replay --capacity-factor F --layout-log LOG TRACE`): where nofrag
placed every block, and when it was freed. Keeps those virtual places and replays only the
physical side, as the pool does it (a freed page stays mapped; a physical page may be mapped at up
to --aliases places, one of them in use at a time; new physical pages until the cap, then idle
ones), with one of two rules for which idle page backs a virtual page that needs one:

  nearest  nofrag's rule: the idle page already mapped nearest to it, then the one mapped at the
           fewest places (nofrag looks only at the 64 least recently idled; here all of them);
  belady   with knowledge of the future: the idle page whose other places are next needed latest,
           and when a page has no free alias slot, the place next needed latest loses its mapping.

If belady, which knows the future, does no better than nearest, the moves come from the layout,
not from the choice of pages. Prints moves per step averaged over the steps after step 3, like
`nofrag replay`.

usage: bench/physical_oracle.py LOG [--policy nearest|belady] [--aliases N] [--blocks]
"""
import argparse
from collections import defaultdict

INF = float("inf")
WARMUP_STEPS = 3  # tools/replay.h: REPLAY_WARMUP_STEPS


def read_log(path):
    """Returns (page_bytes, capacity_pages, events): events are ('A', first, last, first_whole,
    last_whole), ('F', first, last) and ('S',), in pages; an allocation also names the pages it
    covers wholly (first_whole > last_whole when none), which bench/pair_pages_sim.py reads."""
    page = cap = None
    base = 0
    events, sizes = [], {}
    with open(path) as f:
        for line in f:
            p = line.split()
            if p[0] == "#":
                # "# nofrag layout log: trace NAME base B page_bytes P capacity_pages C": read from
                # the end, since NAME (a file name) may hold spaces.
                fields = dict(zip(p[-6::2], p[-5::2]))
                page, cap, base = int(fields["page_bytes"]), int(fields["capacity_pages"]), int(fields["base"])
            elif p[0] == "A":
                addr, size = int(p[1]) - base, int(p[2])
                sizes[addr] = size
                events.append(("A", addr // page, (addr + size - 1) // page, -(-addr // page),
                               (addr + size) // page - 1))
            elif p[0] == "F":
                addr = int(p[1]) - base
                size = sizes.pop(addr)
                events.append(("F", addr // page, (addr + size - 1) // page))
            elif p[0] == "S":
                events.append(("S",))
    if page is None:
        raise SystemExit(f"{path}: no layout-log header")
    if not cap:
        raise SystemExit(f"{path}: the replay had no cap; rerun with --capacity or --capacity-factor")
    return page, cap, events


def live_starts(events, pages):
    """For every virtual page, the event indices at which it goes from no live block to one."""
    count = [0] * pages
    starts = defaultdict(list)
    for t, e in enumerate(events):
        if e[0] == "A":
            for v in range(e[1], e[2] + 1):
                if count[v] == 0:
                    starts[v].append(t)
                count[v] += 1
        elif e[0] == "F":
            for v in range(e[1], e[2] + 1):
                count[v] -= 1
    return starts


def simulate(events, cap, policy, max_aliases, blocks=None):
    """Page moves a step after the warm-up, and in all. blocks, a list, receives (step, n, first
    page, pages, moves) for every allocation after the warm-up that moved pages: the n-th of its
    step (counted from 1)."""
    pages = max(e[2] for e in events if e[0] != "S") + 1
    starts = live_starts(events, pages) if policy == "belady" else {}
    cursor = defaultdict(int)

    def next_needed(v, now):
        ts = starts.get(v, ())
        i = cursor[v]
        while i < len(ts) and ts[i] <= now:
            i += 1
        cursor[v] = i
        return ts[i] if i < len(ts) else INF

    count = [0] * pages       # live blocks on each virtual page
    mapped = [-1] * pages     # physical page mapped at each virtual page
    places, busy_at, ever = [], [], []  # per physical page: its places, where it is busy, used before
    idle = set()
    step, moves = 0, defaultdict(int)
    nth = 0  # allocations so far in this step
    for now, e in enumerate(events):
        if e[0] == "S":
            step += 1
            nth = 0
            continue
        first, last = e[1], e[2]
        if e[0] == "F":
            for v in range(first, last + 1):
                count[v] -= 1
                p = mapped[v]
                if count[v] == 0 and p >= 0 and busy_at[p] == v:
                    busy_at[p] = -1
                    idle.add(p)
            continue
        nth += 1
        moves_before = moves[step]
        lacking = []
        for v in range(first, last + 1):  # first every page that can be had in place
            count[v] += 1
            if count[v] > 1:
                continue
            p = mapped[v]
            if p >= 0 and busy_at[p] == -1:
                busy_at[p] = v
                idle.discard(p)
            else:
                lacking.append(v)
        for v in lacking:
            if mapped[v] >= 0:  # its physical page is busy through another place
                places[mapped[v]].remove(v)
                mapped[v] = -1
            if len(places) < cap:
                p = len(places)
                places.append([])
                busy_at.append(-1)
                ever.append(False)
            else:
                if not idle:
                    raise SystemExit(f"no idle physical page at event {now}: the cap is too small")
                if policy == "belady":
                    p = max(idle, key=lambda q: (min((next_needed(u, now) for u in places[q]), default=INF),
                                                 -len(places[q])))
                else:
                    p = min(idle, key=lambda q: (min((abs(u - v) for u in places[q]), default=INF),
                                                 len(places[q])))
                idle.discard(p)
                if len(places[p]) >= max_aliases:
                    if policy == "belady":
                        drop = max(places[p], key=lambda u: next_needed(u, now))
                    else:
                        drop = places[p][0]  # nofrag drops the place mapped longest ago
                    places[p].remove(drop)
                    mapped[drop] = -1
                if ever[p]:
                    moves[step] += 1
            ever[p] = True
            mapped[v] = p
            places[p].append(v)
            busy_at[p] = v
        if blocks is not None and step > WARMUP_STEPS and moves[step] > moves_before:
            blocks.append((step, nth, first, last - first + 1, moves[step] - moves_before))
    # Step k (0-based) runs after the (k+1)-th mark; the window is steps WARMUP_STEPS and later.
    window = max(1, step - WARMUP_STEPS)
    in_window = sum(c for s, c in moves.items() if s > WARMUP_STEPS)
    return in_window / window, sum(moves.values())


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("log")
    ap.add_argument("--policy", choices=("nearest", "belady"), default="nearest")
    ap.add_argument("--aliases", type=int, default=4, help="places per physical page (nofrag: 4)")
    ap.add_argument("--blocks", action="store_true",
                    help="also list the allocations that moved pages after the warm-up (step, n-th of "
                         "the step, first page, pages, moves) and how many moves came from blocks that "
                         "reach above the cap's page count (the top of the range)")
    args = ap.parse_args()
    page, cap, events = read_log(args.log)
    blocks = [] if args.blocks else None
    per_step, total = simulate(events, cap, args.policy, args.aliases, blocks)
    print(f"{args.log}: {args.policy}, cap {cap} pages of {page >> 20} MiB, {args.aliases} places a page: "
          f"{per_step:.1f} page moves a step after step {WARMUP_STEPS} ({total} in all)")
    if blocks is not None:
        for step, nth, first, pages, moved in blocks:
            print(f"  step {step}: allocation {nth} of the step, pages {first}-{first + pages - 1} ({pages}): "
                  f"{moved} moves")
        top = sum(b[4] for b in blocks if b[2] + b[3] > cap)
        print(f"after step {WARMUP_STEPS}: {sum(b[4] for b in blocks)} moves from {len(blocks)} allocations, "
              f"{top} of them by blocks reaching above page {cap}")


if __name__ == "__main__":
    main()
