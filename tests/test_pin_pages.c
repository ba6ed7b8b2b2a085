/* nf_config.pin_pages: every address a pinned pool handed out stays backed by the same memory for
 * the pool's life, freed or not (what a CUDA graph's replays need), and the pool never unmaps,
 * moves or releases a page. On real host memory: each block is filled with a byte of its own when
 * allocated; after every operation every byte ever written must still read back as the last value
 * written there, through the same address. The same operations on an unpinned pool move pages
 * (checked), which would break that. */
#include <string.h>

#include "check.h"

enum { GRAN = 64 * 1024, GRANULE = 512, OPS = 3000, SLOTS = 48 };
static const uint64_t VIRTUAL = 512ull * GRAN;

/* The walk's first block starts the pool's virtual range. */
static int first_address(void *user, const nf_block_info *block) {
    *(uint64_t *)user = block->address;
    return 1; /* stop */
}

typedef struct run_result {
    uint64_t unmaps, page_releases, failures;
} run_result;

/* Random allocations and frees of 1 byte to 6 pages, at most SLOTS live. With check_bytes, the
 * pool's memory is checked against `shadow` (last byte written per GRANULE, 0: never written). */
static run_result run(bool pin, bool check_bytes, uint64_t seed) {
    test_pool_spec spec = {.real_memory = true, .gran = GRAN, .virtual_bytes = VIRTUAL};
    nf_backend *be;
    nf_pool *pool = test_pool(&spec, &be);
    if (pin) { /* test_pool has no field for it: a second pool over the same backend */
        nf_pool_destroy(pool);
        nf_config cfg = nf_config_default();
        cfg.virtual_bytes = VIRTUAL;
        cfg.pin_pages = true;
        cfg.log = test_log;
        REQUIRE(nf_pool_create(&cfg, be, &pool) == NF_OK);
    }
    nf_stats st;
    CHECK_OK(nf_stats_get(pool, &st));
    uint8_t *shadow = calloc(VIRTUAL / GRANULE, 1);
    REQUIRE(shadow != NULL);
    uint64_t range_start = 0;
    CHECK_OK(nf_pool_walk(pool, first_address, &range_start));
    uint8_t *base = (uint8_t *)(uintptr_t)range_start;
    void *ptr[SLOTS] = {0};
    size_t size[SLOTS] = {0};
    uint8_t next_byte = 1;
    run_result r = {0, 0, 0};
    for (int op = 0; op < OPS; op++) {
        int slot = (int)rng_below(&seed, SLOTS);
        if (ptr[slot]) {
            CHECK_OK(nf_free(pool, ptr[slot], NULL));
            ptr[slot] = NULL;
        } else {
            /* Mostly small, now and then several pages: frees leave pages idle at many places. */
            size[slot] = rng_below(&seed, 4) ? 1 + rng_below(&seed, 3 * GRANULE) : 1 + rng_below(&seed, 6 * GRAN);
            nf_status s = nf_alloc(pool, size[slot], NULL, &ptr[slot]);
            if (s != NF_OK) {
                r.failures++;
                ptr[slot] = NULL;
                continue;
            }
            uint8_t *p = ptr[slot];
            if (check_bytes) {
                next_byte = (uint8_t)(next_byte % 255 + 1);
                size_t rounded = (size[slot] + GRANULE - 1) / GRANULE * GRANULE;
                memset(p, next_byte, rounded);
                uint64_t at = (uint64_t)(p - base) / GRANULE;
                memset(shadow + at, next_byte, rounded / GRANULE);
            }
        }
        CHECK_OK(nf_pool_check(pool));
        if (check_bytes && op % 10 == 0)
            for (uint64_t g = 0; g < VIRTUAL / GRANULE; g++)
                if (shadow[g] && base[g * GRANULE] != shadow[g]) {
                    CHECK(!"a byte written through an address no longer reads back there");
                    check_bytes = false; /* once is enough */
                    break;
                }
    }
    CHECK_OK(nf_stats_get(pool, &st));
    r.unmaps = st.calls_unmap;
    r.page_releases = st.calls_page_release;
    for (int i = 0; i < SLOTS; i++)
        if (ptr[i]) CHECK_OK(nf_free(pool, ptr[i], NULL));
    if (pin) {
        /* Nothing is released while the pool lives: not by a trim, not by a lower cap. */
        uint64_t released = 1;
        uint64_t held = st.reserved_bytes.current;
        CHECK_OK(nf_trim(pool, 0, &released));
        CHECK(released == 0);
        CHECK_OK(nf_pool_set_capacity(pool, GRAN));
        CHECK_OK(nf_stats_get(pool, &st));
        CHECK(st.reserved_bytes.current == held && st.calls_page_release == 0);
        CHECK_OK(nf_pool_check(pool));
    }
    free(shadow);
    test_pool_close(pool, be);
    return r;
}

int main(void) {
    for (uint64_t seed = 1; seed <= 3; seed++) {
        run_result unpinned = run(false, false, seed);
        /* The operations make an unpinned pool move pages (else this test would prove nothing). */
        CHECK(unpinned.unmaps > 0);
        run_result pinned = run(true, true, seed);
        CHECK(pinned.unmaps == 0 && pinned.page_releases == 0 && pinned.failures == 0);
    }

    /* Under a cap a pinned pool fails a request rather than move a page, and stays consistent. */
    nf_backend *be;
    REQUIRE(nf_backend_host_create(false, GRAN, &be) == NF_OK);
    nf_config cfg = nf_config_default();
    cfg.capacity = 4 * GRAN;
    cfg.virtual_bytes = 64 * GRAN;
    cfg.pin_pages = true;
    cfg.log = test_log;
    nf_pool *pool;
    REQUIRE(nf_pool_create(&cfg, be, &pool) == NF_OK);
    void *a, *b, *c;
    CHECK_OK(nf_alloc(pool, 2 * GRAN, NULL, &a));
    CHECK_OK(nf_alloc(pool, 2 * GRAN, NULL, &b));
    CHECK_OK(nf_free(pool, a, NULL));
    /* Two idle pages, but at a's place: a 3-page block needs a third page, which the cap forbids. */
    CHECK_STATUS(nf_alloc(pool, 3 * GRAN, NULL, &c), NF_ERR_OUT_OF_MEMORY);
    CHECK_OK(nf_pool_check(pool));
    /* A block that fits a's place takes its pages in place. */
    CHECK_OK(nf_alloc(pool, 2 * GRAN, NULL, &c));
    CHECK(c == a);
    CHECK_OK(nf_free(pool, b, NULL));
    CHECK_OK(nf_free(pool, c, NULL));
    test_pool_close(pool, be);

    /* Pairs only make moves cheaper, and a pinned pool never moves a page: refused, like a reserve. */
    REQUIRE(nf_backend_host_create(false, GRAN, &be) == NF_OK);
    cfg.pair_min_pages = 2;
    pool = NULL;
    CHECK_STATUS(nf_pool_create(&cfg, be, &pool), NF_ERR_INVALID_ARG);
    CHECK(pool == NULL);
    nf_backend_destroy(be);
    return check_exit("test_pin_pages");
}
