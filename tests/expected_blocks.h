/* What a randomised test expects of a pool's live blocks (test_groups, test_block_backend): each
 * slot an address, a size, a group and the byte it was filled with; the checks that the walker
 * agrees and that every block keeps its bytes. */
#ifndef NOFRAG_TEST_EXPECTED_BLOCKS_H
#define NOFRAG_TEST_EXPECTED_BLOCKS_H

#include <stdint.h>

#include "check.h"

typedef struct expected_block {
    unsigned char *ptr; /* NULL: the slot is empty */
    size_t size;
    uint64_t group;
    unsigned char fill;
} expected_block;

/* Empties every slot of `group` (as nf_free_group frees them); returns how many there were. */
static inline uint64_t expected_drop_group(expected_block *blocks, int slots, uint64_t group) {
    uint64_t dropped = 0;
    for (int i = 0; i < slots; i++)
        if (blocks[i].ptr && blocks[i].group == group) {
            blocks[i].ptr = NULL;
            dropped++;
        }
    return dropped;
}

typedef struct expected_walk {
    const expected_block *blocks;
    int slots;
    uint64_t live_blocks; /* live blocks the walker visited */
    uint64_t mismatched;  /* of them, not expected, or of another group, or smaller than expected */
} expected_walk;

static inline int expected_walk_visit(void *user, const nf_block_info *block) {
    expected_walk *w = user;
    if (!block->live) return 0;
    w->live_blocks++;
    bool found = false;
    for (int i = 0; i < w->slots; i++)
        if (w->blocks[i].ptr && (uint64_t)(uintptr_t)w->blocks[i].ptr == block->address)
            found = w->blocks[i].group == block->group && block->size >= w->blocks[i].size;
    w->mismatched += !found;
    return 0;
}

/* Checks that the pool's live blocks are exactly the expected ones (address, group, size) and that
 * each still holds its fill, read every `stride` bytes from the first and at the last. Returns the
 * number of expected blocks. */
static inline uint64_t expected_check(nf_pool *pool, const expected_block *blocks, int slots, size_t stride) {
    expected_walk w = {blocks, slots, 0, 0};
    CHECK_OK(nf_pool_walk(pool, expected_walk_visit, &w));
    uint64_t expected_live = 0, bytes_wrong = 0;
    for (int i = 0; i < slots; i++) {
        if (!blocks[i].ptr) continue;
        expected_live++;
        for (size_t k = 0; k < blocks[i].size; k += stride) bytes_wrong += blocks[i].ptr[k] != blocks[i].fill;
        bytes_wrong += blocks[i].ptr[blocks[i].size - 1] != blocks[i].fill;
    }
    CHECK(w.live_blocks == expected_live && w.mismatched == 0);
    CHECK(bytes_wrong == 0);
    return expected_live;
}

#endif
