/*
 * Placement policy: good fit over the TLSF index.
 *
 * A request first looks in its own size bin for the smallest block that fits (a bounded scan: a
 * bin holds sizes within 1/32 of each other, so the first few candidates are nearly as good as the
 * best); failing that it takes the first usable block of the next non-empty larger bin, O(1).
 * A candidate is usable when its stream rules allow the requesting stream and the pages its front
 * would occupy can be backed under the cap.
 */
#include "placement.h"

enum { OWN_BIN_SCAN = 16 };

nf_status placement_init(nf_pool *pool) {
    (void)pool;
    return NF_OK;
}

void placement_destroy(nf_pool *pool) { (void)pool; }

void placement_note_free(nf_pool *pool, const block *b) {
    (void)pool;
    (void)b;
}

void placement_note_step(nf_pool *pool) { (void)pool; }

static bool candidate_fits(const nf_pool *pool, const block *b, uint64_t size, uint32_t idx) {
    return b->size >= size && pool_block_usable_by(pool, b, idx) &&
           pool_pages_available(pool, b->addr, size);
}

block *placement_find(nf_pool *pool, uint64_t size, uint32_t idx) {
    uint32_t fl, sl;
    index_bin_of(size, &fl, &sl);
    block *best = NULL;
    int scanned = 0;
    for (block *b = pool->index.bins[fl][sl]; b && scanned < OWN_BIN_SCAN; b = b->free_next, scanned++)
        if ((!best || b->size < best->size) && candidate_fits(pool, b, size, idx)) best = b;
    if (best) return best;

    if (++sl == INDEX_SL_COUNT) {
        sl = 0;
        fl++;
    }
    while (index_next_bin(&pool->index, fl, sl, &fl, &sl)) {
        for (block *b = pool->index.bins[fl][sl]; b; b = b->free_next)
            if (candidate_fits(pool, b, size, idx)) return b;
        if (++sl == INDEX_SL_COUNT) {
            sl = 0;
            fl++;
        }
    }
    return NULL;
}
