#!/usr/bin/env python3
"""What would pages of two sizes do? A model of the design proposed in docs/placement.md ("4 MiB
pages on all 30 traces again"): single pages (one granule) and pairs (one handle of two granules,
mapped whole at a pair-aligned place), replayed over a layout nofrag made with single pages.

Reads a layout log (`nofrag replay --capacity-factor F --layout-log LOG TRACE`) and replays only
the physical side, as bench/physical_oracle.py does with nofrag's rule (a freed page stays mapped,
a physical page may be mapped at up to --aliases places, new pages until the cap, then the idle
page mapped nearest), with --pairs:

  - a block's pages that form aligned pairs wholly inside it (no neighbouring block can share
    them), lacking a physical page, are backed
    by a pair: an idle pair already mapped there (claimed in place), else a new one while the cap
    has room for two granules, else an idle pair moved there; failing all three, two singles;
  - every other page (the block's edges, small blocks) takes a single, or claims in place whatever
    handle is mapped at it when that handle is idle (a pair then holds a granule no block uses);
  - a single short under the cap: an idle pair is released and its two granules become singles.

Without --pairs it is physical_oracle.py's nearest rule with single pages, the baseline. Prints
handle moves a step after step 3 (a move maps a handle that served elsewhere at a new place:
nofrag's remaps), pairs released to make singles, and pages the cap could not back (backed anyway, so that the replay goes on). The
layout stays nofrag's single-page one: a pool with pairs would place the same blocks the same
way, so this isolates what the physical side changes, but not what the waste of half-used pairs
would do to the layout. An estimate, not a replay.

usage: bench/pair_pages_sim.py LOG [--pairs] [--min-pages N] [--strict FRACTION] [--aliases N]
"""
import argparse
from collections import defaultdict

from physical_oracle import WARMUP_STEPS, read_log


class Handles:
    """Physical handles of 1 or 2 granules: where each is mapped, where it is busy, which are idle."""

    def __init__(self, cap, max_aliases):
        self.cap, self.max_aliases = cap, max_aliases
        self.size, self.places, self.busy_at, self.ever = [], [], [], []
        self.idle = {1: set(), 2: set()}
        self.granules = 0
        self.released = 0

    def create(self, size):
        p = len(self.size)
        self.size.append(size)
        self.places.append([])
        self.busy_at.append(None)
        self.ever.append(False)
        self.granules += size
        return p

    def release(self, p):
        """An idle handle given back: its places lose their mapping (the caller clears them)."""
        self.idle[self.size[p]].discard(p)
        self.granules -= self.size[p]
        self.size[p] = 0
        self.released += 1
        places, self.places[p] = self.places[p], []
        return places


def simulate(events, cap, pairs, max_aliases, strict=0.0, min_pages=0):
    pages = max(e[2] for e in events if e[0] != "S") + 1
    count = [0] * pages          # live blocks on each virtual page
    mapped = [None] * pages      # (handle, place) backing each virtual page; place = first page of the mapping
    h = Handles(cap, max_aliases)
    step, moves, failed = 0, defaultdict(int), 0

    def spare():
        """Granules that may still become busy: room under the cap and idle handles."""
        return h.cap - h.granules + len(h.idle[1]) + 2 * len(h.idle[2])

    def pages_of(p, place):
        return range(place, place + h.size[p])

    def busy(p, place):
        return any(count[u] for u in pages_of(p, place))

    def unmap(place, p):
        for u in pages_of(p, place):
            mapped[u] = None
        h.places[p].remove(place)

    def claim(p, place):
        h.busy_at[p] = place
        h.idle[h.size[p]].discard(p)

    def map_at(p, place):
        """Maps handle p at `place` (its pages lose what backed them), busy there."""
        for u in pages_of(p, place):
            if mapped[u] is not None:
                q, at = mapped[u]
                unmap(at, q)
        if len(h.places[p]) >= h.max_aliases:
            unmap(h.places[p][-1], p)  # nofrag drops the place mapped most recently
        if h.ever[p]:
            moves[step] += 1
        h.ever[p] = True
        h.places[p].append(place)
        for u in pages_of(p, place):
            mapped[u] = (p, place)
        claim(p, place)

    def nearest_idle(size, v):
        cands = h.idle[size]
        if not cands:
            return None
        return min(cands, key=lambda q: (min((abs(u - v) for u in h.places[q]), default=float("inf")),
                                         len(h.places[q])))

    def take(size, place):
        """A handle of `size` for `place`: new while the cap allows, else an idle one; None if neither."""
        if h.granules + size <= h.cap:
            return h.create(size)
        p = nearest_idle(size, place)
        if p is None and size == 1 and h.idle[2]:
            for u in h.release(nearest_idle(2, place)):  # an idle pair becomes two singles
                for w in range(u, u + 2):
                    mapped[w] = None
            return h.create(1)
        return p

    for e in events:
        if e[0] == "S":
            step += 1
            continue
        first, last = e[1], e[2]
        if e[0] == "F":
            for v in range(first, last + 1):
                count[v] -= 1
            for v in range(first, last + 1):
                if mapped[v] is not None:
                    p, place = mapped[v]
                    if h.busy_at[p] == place and not busy(p, place):
                        h.busy_at[p] = None
                        h.idle[h.size[p]].add(p)
            continue
        lacking = []
        for v in range(first, last + 1):
            count[v] += 1
            if mapped[v] is not None:
                p, place = mapped[v]
                if h.busy_at[p] == place:
                    continue  # busy through this place already (another block on the same handle)
                if h.busy_at[p] is None and (h.size[p] == 1 or (place >= e[3] and place + 1 <= e[4]) or
                                             spare() > strict * h.cap):
                    claim(p, place)
                    continue
            lacking.append(v)
        lacking_set = set(lacking)
        done = set()
        if pairs and last - first + 1 >= min_pages:
            whole_first, whole_last = e[3], e[4]  # pages the block covers wholly: no neighbour shares them
            for v in lacking:
                if v % 2 or v < whole_first or v + 1 > whole_last or v + 1 not in lacking_set:
                    continue
                p = take(2, v)
                if p is not None:
                    map_at(p, v)
                    done.update((v, v + 1))
        for v in lacking:
            if v in done:
                continue
            p = take(1, v)
            if p is None:  # the cap cannot back it: counted, and backed anyway so the replay goes on
                failed += 1
                p = h.create(1)
            map_at(p, v)
    window = max(1, step - WARMUP_STEPS)
    in_window = sum(c for s, c in moves.items() if s > WARMUP_STEPS)
    return in_window / window, h.released, failed


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("log")
    ap.add_argument("--pairs", action="store_true", help="pairs inside blocks, singles at their edges")
    ap.add_argument("--strict", type=float, default=0.0,
                    help="a block covering one page of an idle pair claims it in place only while more "
                         "than this fraction of the cap is spare (default 0: always)")
    ap.add_argument("--min-pages", type=int, default=0, help="pairs only for blocks of at least this many pages")
    ap.add_argument("--aliases", type=int, default=4, help="places per handle (nofrag: 4)")
    args = ap.parse_args()
    page, cap, events = read_log(args.log)
    per_step, released, failed = simulate(events, cap, args.pairs, args.aliases, args.strict, args.min_pages)
    print(f"{args.log}: {'pairs and singles' if args.pairs else 'singles'}, cap {cap} granules of "
          f"{page >> 20} MiB: {per_step:.1f} handle moves a step after step {WARMUP_STEPS}, "
          f"{released} pairs released for singles, {failed} pages over the cap")


if __name__ == "__main__":
    main()
