/*
 * Placement policy: good fit over the TLSF index, steered onto pages that need no mapping.
 *
 * 0. First, under a tight budget (budget_tight: a cap within 10% of the live peak so
 *    far), a request smaller than a page takes the first of the first FILL_CANDIDATES candidates
 *    in good-fit order whose pages all hold live blocks already (on_busy_pages): it costs no
 *    physical page at all. Sub-page holes between live blocks are where a tight cap's spare pages
 *    go (docs/placement.md, "Filling busy pages under a tight budget"): the smallest cap that
 *    completes fell on the gradient-accumulation recordings (llama_small_accum_ckpt 1.0204x ->
 *    1.0166x, gpt2_accum_ckpt 1.0170x -> 1.0139x). Without a tight budget it reorders layouts for
 *    nothing (calls a step without a cap rose on most traces when it always applied); with 4
 *    candidates it gained less, with 16 no more than with 8. Not while several streams share the
 *    pool under the slower stream rule (no reuse_across_streams): blocks fenced by other streams
 *    are unusable there, the shifted layout sent more requests to places needing pages while
 *    other streams had frees pending, and the pool asked them far more often (FSDP rank 1 at
 *    1.02x: 29 -> 77 event queries a step).
 * 1. Good fit: a request first looks in its own size bin for the smallest block that fits (a
 *    bounded scan: a bin holds sizes within 1/32 of each other, so the first few candidates are
 *    nearly as good as the best); failing that it takes the first usable block of the next
 *    non-empty larger bin, O(1).
 * 2. If that choice would need physical pages mapped (pages unmapped there, or whose physical page
 *    is busy through another alias), candidates in good-fit order are examined for one that needs
 *    none, up to CANDIDATES_MAX; the first such wins, otherwise the good-fit choice stands.
 * 3. Under a cap, if no free block takes the request at its front, the last resort (tightest_fit)
 *    tries other places within free blocks before the allocation fails.
 *
 * The common case (the good-fit choice's pages all free of cost) is found by claiming those pages
 * in place in one walk (pages_claim_in_place), before any cost is weighed: the steps above would
 * choose the same block.
 *
 * Why this order: good fit keeps the virtual layout of a repeating training step stable, so the
 * same blocks land on the same pages step after step; the second pass catches the requests whose
 * good-fit place has lost its pages (their physical pages serve another place now) while a place
 * with idle pages of its own exists. Taking the cheapest place outright, rather than the good fit
 * when nothing is free of cost, scattered fixed-shape steps (vit_fixed: 0 -> 15-25 remaps per step)
 * and was dropped; so were address-ordered first and best fit, mapped-first placement, and an oracle
 * that put blocks outliving a step in a region of their own (docs/placement.md has the figures).
 *
 * A candidate is usable when its stream rules allow the requesting stream and the pages it would
 * occupy can be backed under the cap.
 */
#include "placement.h"

#include "pages.h"

enum { OWN_BIN_SCAN = 16, CANDIDATES_MAX = 16, FILL_CANDIDATES = 8 };

/* Moves (fl, sl) to the next bin in size order. */
static void bin_next(uint32_t *fl, uint32_t *sl) {
    if (++*sl == INDEX_SL_COUNT) {
        *sl = 0;
        ++*fl;
    }
}

/* Whether b can take the request: its size, its streams, and (weigh_pages) whether its pages can be
 * backed under the cap, with *cost_out the pages it would need mapped. */
static bool candidate_fits(nf_pool *pool, const block *b, uint64_t size, uint32_t idx, bool weigh_pages,
                           uint64_t *cost_out) {
    return b->size >= size && pool_block_usable_by(pool, b, idx) &&
           (!weigh_pages || pages_available(pool, b->addr, size, cost_out));
}

/* The good-fit candidate; weigh_pages == false: by size and streams alone, the choice when every
 * candidate's pages are free of cost (*cost_out is then left alone). Inline so that each call site
 * gets a copy with weigh_pages folded: one out-of-line copy cost 1.7% of replay instructions. */
static inline block *good_fit(nf_pool *pool, uint64_t size, uint32_t idx, bool weigh_pages, uint64_t *cost_out) {
    uint32_t fl, sl;
    index_bin_of(size, &fl, &sl);
    block *best = NULL;
    uint64_t cost = 0;
    int scanned = 0;
    for (block *b = pool->index.bins[fl][sl]; b && scanned < OWN_BIN_SCAN; b = b->free_next, scanned++)
        if ((!best || b->size < best->size) && candidate_fits(pool, b, size, idx, weigh_pages, &cost)) {
            best = b;
            *cost_out = cost;
        }
    if (best) return best;
    bin_next(&fl, &sl);
    while (index_next_bin(&pool->index, fl, sl, &fl, &sl)) {
        for (block *b = pool->index.bins[fl][sl]; b; b = b->free_next)
            if (candidate_fits(pool, b, size, idx, weigh_pages, cost_out)) return b;
        bin_next(&fl, &sl);
    }
    return NULL;
}

/* What a candidate place must offer: no page to map, or no page newly busy. */
typedef bool (*place_test)(nf_pool *pool, uint64_t addr, uint64_t size);

static bool needs_no_mapping(nf_pool *pool, uint64_t addr, uint64_t size) {
    return pages_cost(pool, addr, size) == 0;
}

static bool on_busy_pages(nf_pool *pool, uint64_t addr, uint64_t size) {
    return pages_all_busy(pool, addr, size);
}

/* The first candidate in good-fit order that passes `test` at its front; NULL if none among the
 * first `limit` that stream idx may use. */
static block *first_passing(nf_pool *pool, uint64_t size, uint32_t idx, int limit, place_test test) {
    uint32_t fl, sl;
    index_bin_of(size, &fl, &sl);
    int seen = 0;
    for (;;) {
        for (block *b = pool->index.bins[fl][sl]; b; b = b->free_next) {
            if (b->size < size || !pool_block_usable_by(pool, b, idx)) continue;
            if (test(pool, b->addr, size)) return b;
            if (++seen == limit) return NULL;
        }
        bin_next(&fl, &sl);
        if (!index_next_bin(&pool->index, fl, sl, &fl, &sl)) return NULL;
    }
}

/* The last resort under a cap, when no free block can take the request at its front: every usable
 * free block, with the request at its front, at its end, and starting or ending on a page
 * boundary; the place that makes the fewest pages newly busy wins (then the fewest to map, then
 * the first seen). The end of a free block shares its last page with the live block after it, and
 * a page-aligned place may span one page less than the front: at the cap, one page decides
 * whether the request fits at all. Reached only where good_fit found nothing, so its walk over
 * all free blocks replaces an out-of-memory error; placing this way always would shift the
 * repeating layout of training steps (docs/placement.md: page-tight offsets). */
static block *tightest_fit(nf_pool *pool, uint64_t size, uint32_t idx, uint64_t *offset_out) {
    uint64_t spare = pages_spare(pool), gran = pool->gran;
    block *best = NULL;
    uint64_t best_busy = UINT64_MAX, best_cost = UINT64_MAX;
    uint32_t fl, sl;
    index_bin_of(size, &fl, &sl);
    while (index_next_bin(&pool->index, fl, sl, &fl, &sl)) {
        for (block *b = pool->index.bins[fl][sl]; b; b = b->free_next) {
            if (b->size < size || !pool_block_usable_by(pool, b, idx)) continue;
            uint64_t end = b->addr + b->size;
            uint64_t aligned_start = (b->addr + gran - 1) / gran * gran, aligned_end = end / gran * gran;
            uint64_t offsets[4] = {0, b->size - size, UINT64_MAX, UINT64_MAX};
            if (aligned_start + size <= end) offsets[2] = aligned_start - b->addr;
            if (aligned_end >= b->addr + size) offsets[3] = aligned_end - size - b->addr;
            for (int i = 0; i < 4; i++) {
                if (offsets[i] == UINT64_MAX) continue;
                uint64_t cost, busy = pages_newly_busy(pool, b->addr + offsets[i], size, &cost);
                if (busy > spare || busy > best_busy || (busy == best_busy && cost >= best_cost)) continue;
                best = b;
                best_busy = busy;
                best_cost = cost;
                *offset_out = offsets[i];
            }
        }
        bin_next(&fl, &sl);
    }
    return best;
}

block *placement_find(nf_pool *pool, uint64_t size, uint32_t idx, uint64_t *offset_out, bool *claimed_out) {
    *offset_out = 0;
    *claimed_out = false;
    if (pool->budget_tight && size < pool->gran && (pool->stream_count <= 1 || pool->order_on_device)) {
        /* Step 0. Its pages hold live blocks already: claiming them in place only counts the
         * block (and tells the caller nothing needs mapping, so it asks no stream). */
        block *busy_place = first_passing(pool, size, idx, FILL_CANDIDATES, on_busy_pages);
        if (busy_place && pages_claim_in_place(pool, busy_place->addr, size, idx)) {
            *claimed_out = true;
            return busy_place;
        }
    }
    /* The common case in one walk over the pages: the good-fit choice, if its pages are free of
     * cost, is what the steps below would choose too (a place free of cost fits under any cap),
     * and claiming them in place is all pages_acquire would do. */
    uint64_t cost = 0;
    block *choice = good_fit(pool, size, idx, false, &cost);
    if (choice && pages_claim_in_place(pool, choice->addr, size, idx)) {
        *claimed_out = true;
        return choice;
    }
    choice = good_fit(pool, size, idx, true, &cost);
    if (!choice) return pool->cap_pages ? tightest_fit(pool, size, idx, offset_out) : NULL;
    if (cost == 0) return choice;
    block *free_place = first_passing(pool, size, idx, CANDIDATES_MAX, needs_no_mapping);
    return free_place ? free_place : choice;
}
