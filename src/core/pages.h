/*
 * The page layer (pages.c): virtual pages, the physical pages behind them, the cap. The block
 * layer (pool.c) calls these with the pool's lock held.
 */
#ifndef NOFRAG_PAGES_H
#define NOFRAG_PAGES_H

#include "pool_internal.h"

nf_status pages_init(nf_pool *pool);
void pages_free(nf_pool *pool);
/* Virtual pages of [addr, addr + size) that would need a physical page mapped. */
uint64_t pages_cost(nf_pool *pool, uint64_t addr, uint64_t size);
/* Whether [addr, addr + size) can be backed under the cap (idle pages count: they can move);
 * *cost_out (may be NULL) receives pages_cost of the range. */
bool pages_available(nf_pool *pool, uint64_t addr, uint64_t size, uint64_t *cost_out);
/* Pages that a block on [addr, addr + size) would make busy: those needing a physical page mapped
 * plus idle ones it would claim in place. *cost_out receives the first count (pages_cost). */
uint64_t pages_newly_busy(nf_pool *pool, uint64_t addr, uint64_t size, uint64_t *cost_out);

/* Whether every page of [addr, addr + size) holds a live block already (pages_newly_busy == 0 and
 * nothing to map): O(pages of the range), no side effect. */
static inline bool pages_all_busy(const nf_pool *pool, uint64_t addr, uint64_t size) {
    for (uint64_t v = page_of(pool, addr), last = page_last(pool, addr, size); v <= last; v++)
        if (!pool->pages[v].live_blocks) return false;
    return true;
}
/* How many more pages may become busy under the cap (headroom plus idle pages); UINT64_MAX
 * without a cap. A range fits when pages_newly_busy <= pages_spare. */
uint64_t pages_spare(const nf_pool *pool);
/* The common case of pages_acquire in one walk: if every page of [addr, addr + size) is busy
 * through its place already, or mapped to an idle physical page last used through that same
 * place, with no other stream's work in the way, counts the block on them, claims them and returns
 * true; otherwise changes nothing and returns false. Succeeds exactly when pages_cost would be 0
 * and pages_acquire would neither wait nor map, so placement may try it on the good-fit choice
 * before weighing costs. */
bool pages_claim_in_place(nf_pool *pool, uint64_t addr, uint64_t size, uint32_t idx);
/* Undoes a successful pages_claim_in_place when nothing else has touched the pages since. */
void pages_claim_undo(nf_pool *pool, uint64_t addr, uint64_t size);
/* A live block now lies on [addr, addr + size): count it on its pages and back every page.
 * *reused is set when a physical page came from another place. On failure the counts stay
 * incremented; the caller undoes them with pages_release. */
nf_status pages_acquire(nf_pool *pool, uint64_t addr, uint64_t size, uint32_t idx, bool *reused);
/* The live block on [addr, addr + size) was freed as free number seq by the streams in mask. */
void pages_release(nf_pool *pool, uint64_t addr, uint64_t size, uint64_t mask, uint64_t seq);
/* Makes the reserve's pages (reserve_pages), idle and mapped nowhere until a block needs them. */
nf_status pages_make_reserve(nf_pool *pool);
/* Releases idle physical pages until at most keep_pages are held (never fewer than the reserve;
 * none from a pool with pin_pages). */
nf_status pages_trim(nf_pool *pool, uint64_t keep_pages, uint64_t *released);
/* set_access again on every mapped page with access, one call per run of adjacent ones, after the
 * backend's grant widened (nf_pool_enable_peer_access). Every run is tried; the first failure is
 * returned, and the idle pages of a failed run are marked to get access when next claimed. */
nf_status pages_grant_access_again(nf_pool *pool);
/* Unmaps and releases everything; returns the first failure after trying all. */
nf_status pages_destroy(nf_pool *pool);
static inline bool pages_mapped(const nf_pool *pool, uint64_t v) { return pool->pages[v].phys != NF_NO_PAGE; }
/* I7-I11 of pool_internal.h. */
nf_status pages_check(nf_pool *pool);

#endif
