/*
 * Free blocks indexed by size with TLSF's two-level bitmaps: the first level is the power of two
 * (floor(log2(size))), the second splits each power-of-two range into INDEX_SL_COUNT equal bins.
 * Finding the first non-empty bin at or above a size is two bit scans: O(1).
 */
#include "pool_internal.h"

static uint32_t log2_floor(uint64_t x) { return 63u - (uint32_t)__builtin_clzll(x); }

void index_bin_of(uint64_t size, uint32_t *fl, uint32_t *sl) {
    uint32_t f = log2_floor(size);
    if (f < INDEX_SL_LOG2) {
        /* Sizes below 2^SL_LOG2 never occur (alignment >= 256); map them to bin (SL_LOG2, 0). */
        *fl = INDEX_SL_LOG2;
        *sl = 0;
        return;
    }
    *fl = f;
    *sl = (uint32_t)((size >> (f - INDEX_SL_LOG2)) - INDEX_SL_COUNT);
}

void index_insert(block_index *index, block *b) {
    uint32_t fl, sl;
    index_bin_of(b->size, &fl, &sl);
    block *head = index->bins[fl][sl];
    b->free_prev = NULL;
    b->free_next = head;
    if (head) head->free_prev = b;
    index->bins[fl][sl] = b;
    index->fl_bitmap |= 1ull << fl;
    index->sl_bitmap[fl] |= 1u << sl;
    b->in_index = 1;
    index->count++;
}

void index_remove(block_index *index, block *b) {
    uint32_t fl, sl;
    index_bin_of(b->size, &fl, &sl);
    if (b->free_prev) b->free_prev->free_next = b->free_next;
    else index->bins[fl][sl] = b->free_next;
    if (b->free_next) b->free_next->free_prev = b->free_prev;
    if (!index->bins[fl][sl]) {
        index->sl_bitmap[fl] &= ~(1u << sl);
        if (!index->sl_bitmap[fl]) index->fl_bitmap &= ~(1ull << fl);
    }
    b->free_prev = b->free_next = NULL;
    b->in_index = 0;
    index->count--;
}

bool index_next_bin(const block_index *index, uint32_t fl, uint32_t sl, uint32_t *fl_out,
                    uint32_t *sl_out) {
    if (fl >= INDEX_FL_COUNT) return false;
    uint32_t sl_map = sl < INDEX_SL_COUNT ? index->sl_bitmap[fl] & (~0u << sl) : 0;
    if (!sl_map) {
        if (fl + 1 >= INDEX_FL_COUNT) return false;
        uint64_t fl_map = index->fl_bitmap & (~0ull << (fl + 1));
        if (!fl_map) return false;
        fl = (uint32_t)__builtin_ctzll(fl_map);
        sl_map = index->sl_bitmap[fl];
    }
    *fl_out = fl;
    *sl_out = (uint32_t)__builtin_ctz(sl_map);
    return true;
}
