/* Groups freed at once (nf_alloc_group / nf_free_group). Random allocations in groups 0 (none) to
 * 4 on real host memory, each block filled with a byte of its own; now and then a whole group is
 * freed. After every operation: the invariants hold, the walker's live blocks and their groups are
 * exactly those expected, and every live block still holds its bytes. */
#include <string.h>

#include "expected_blocks.h"

enum { GRAN = 64 * 1024, SLOTS = 64, OPS = 4000, GROUPS = 5 };

static expected_block live[SLOTS];

int main(void) {
    test_pool_spec spec = {.real_memory = true, .gran = GRAN, .virtual_bytes = 1024ull * GRAN};
    nf_backend *be;
    nf_pool *pool = test_pool(&spec, &be);
    uint64_t seed = 7, freed = 99;
    void *p = NULL;

    /* Bad arguments. */
    CHECK_STATUS(nf_free_group(pool, 0, NULL, &freed), NF_ERR_INVALID_ARG);
    CHECK(freed == 0);
    CHECK_STATUS(nf_free_group(NULL, 1, NULL, NULL), NF_ERR_INVALID_ARG);
    CHECK_STATUS(nf_alloc_group(NULL, 10, NULL, 1, &p), NF_ERR_INVALID_ARG);
    CHECK_OK(nf_free_group(pool, 3, NULL, &freed)); /* an empty group: nothing to do */
    CHECK(freed == 0);

    for (int op = 0; op < OPS; op++) {
        uint64_t r = rng_below(&seed, 100);
        if (r < 3) { /* free a whole group */
            uint64_t group = 1 + rng_below(&seed, GROUPS - 1), want = expected_drop_group(live, SLOTS, group);
            CHECK_OK(nf_free_group(pool, group, NULL, &freed));
            CHECK(freed == want);
        } else {
            int slot = (int)rng_below(&seed, SLOTS);
            expected_block *e = &live[slot];
            if (e->ptr) {
                CHECK_OK(nf_free(pool, e->ptr, NULL));
                e->ptr = NULL;
            } else {
                e->size = 1 + rng_below(&seed, rng_below(&seed, 8) ? 4096 : 3 * GRAN);
                e->group = rng_below(&seed, GROUPS);
                e->fill = (unsigned char)(1 + rng_below(&seed, 255));
                CHECK_OK(nf_alloc_group(pool, e->size, NULL, e->group, &p));
                e->ptr = p;
                if (e->ptr) memset(e->ptr, e->fill, e->size);
            }
        }
        CHECK_OK(nf_pool_check(pool));
        expected_check(pool, live, SLOTS, SIZE_MAX); /* the first and the last byte of each */
    }
    /* Group 0 is no group: nf_free_group cannot reach those blocks; nf_free can. */
    for (int i = 0; i < SLOTS; i++)
        if (live[i].ptr) CHECK_OK(nf_free(pool, live[i].ptr, NULL));
    nf_stats st;
    CHECK_OK(nf_stats_get(pool, &st));
    CHECK(st.allocation.current == 0);
    test_pool_close(pool, be);
    return check_exit("test_groups");
}
