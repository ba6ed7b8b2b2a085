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

static bool candidate_fits(nf_pool *pool, const block *b, uint64_t size, uint32_t idx) {
    return b->size >= size && pool_block_usable_by(pool, b, idx) &&
           pool_pages_available(pool, b->addr, size);
}

#include <stdlib.h>
static int experiment = -1;
int nf_experiment_hint; /* oracle lifetime for experiments: 1 long-lived, 0 transient */
static block *brute(nf_pool *pool, uint64_t size, uint32_t idx, uint64_t *offset_out) {
    block *best = NULL;
    uint64_t best_key = UINT64_MAX;
    for (block *b = pool->first; b; b = b->next) {
        if (b->live || b->size < size) continue;
        uint64_t key, off = 0;
        switch (experiment) {
        case 1: key = 0; break; /* address-ordered first fit */
        case 2: key = b->size; break; /* address-ordered best fit */
        case 3: key = (pool_unmapped_pages(pool, b->addr, size) << 40) + (b->size >> 9); break; /* mapped first, then best fit */
        case 4: key = (pool_unmapped_pages(pool, b->addr, size) << 40) + ((b->addr - pool->base) >> 9); break; /* mapped first, then lowest */
        default: {
            /* 5: oracle segregation: long-lived low half, transient high half; address-ordered best fit within */
            uint64_t mid = pool->base + pool->virtual_bytes / 2;
            bool in_high = b->addr + b->size > mid;
            if (nf_experiment_hint && b->addr >= mid) continue;
            if (!nf_experiment_hint && !in_high) continue;
            uint64_t addr = b->addr;
            if (!nf_experiment_hint && addr < mid) { if (b->addr + b->size - mid < size) continue; off = mid - addr; addr = mid; }
            key = experiment == 5 ? b->size : (addr - pool->base) >> 9;
        }
        }
        if (!pool_block_usable_by(pool, b, idx) || !pool_pages_available(pool, b->addr + off, size)) continue;
        if (key < best_key) { best_key = key; best = b; *offset_out = off; }
    }
    return best;
}

block *placement_find(nf_pool *pool, uint64_t size, uint32_t idx, uint64_t *offset_out) {
    if (experiment < 0) { const char *e = getenv("NF_EXPERIMENT"); experiment = e ? atoi(e) : 0; }
    *offset_out = 0;
    if (experiment > 0) return brute(pool, size, idx, offset_out);
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
