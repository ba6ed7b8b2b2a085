/* Pools over a block backend (NF_BACKEND_CAP_PLACES_BLOCKS), on the host stand-in for CUDA's
 * memory pools (nf_backend_host_pool_create, real host memory):
 *   - configs a block backend cannot serve are refused;
 *   - 4,000 random operations on two streams, in groups, with record_stream: after each, the
 *     invariants hold, the walker sees exactly the live blocks, every live block keeps its bytes,
 *     and the backend holds at least the live bytes;
 *   - a cap holds on held memory: cached memory is given back to stay under it, and a request
 *     whose live bytes would pass it fails with the pool unchanged;
 *   - a full device: a request the cache cannot serve is met after the pool gives the cache back;
 *   - bad frees are told apart; trim and a lowered cap give cached memory back;
 *   - what the backend holds is read again by statistics and the check, and memory taken from it
 *     behind the pool's back that passes the cap is caught. */
#include <string.h>

#include "expected_blocks.h"

enum { MIB = 1 << 20, SLOTS = 64, OPS = 4000, GROUPS = 4 };

static expected_block live[SLOTS];

static uint64_t backend_held(nf_backend *be) {
    uint64_t held = 0;
    CHECK(be->held_bytes(be->ctx, &held) == 0);
    return held;
}

static nf_pool *pool_on(nf_backend *be, uint64_t capacity) {
    nf_config cfg = nf_config_default();
    cfg.capacity = capacity;
    cfg.log = test_log;
    nf_pool *pool = NULL;
    REQUIRE(nf_pool_create(&cfg, be, &pool) == NF_OK);
    return pool;
}

static void refused_configs(void) {
    nf_backend *be;
    REQUIRE(nf_backend_host_pool_create(0, &be) == NF_OK);
    nf_pool *pool = NULL;
    nf_config cfg = nf_config_default();
    cfg.reserve_bytes = 4 * MIB;
    CHECK_STATUS(nf_pool_create(&cfg, be, &pool), NF_ERR_INVALID_ARG);
    cfg = nf_config_default();
    cfg.pin_pages = true;
    CHECK_STATUS(nf_pool_create(&cfg, be, &pool), NF_ERR_INVALID_ARG);
    cfg = nf_config_default();
    cfg.page_bytes = 4 * MIB; /* the backend places blocks: there are no pages to size */
    CHECK_STATUS(nf_pool_create(&cfg, be, &pool), NF_ERR_INVALID_ARG);
    cfg = nf_config_default();
    cfg.pair_min_pages = 2; /* nor to pair */
    CHECK_STATUS(nf_pool_create(&cfg, be, &pool), NF_ERR_INVALID_ARG);
    cfg = nf_config_default();
    cfg.capacity = MIB; /* under one unit of the backend */
    CHECK_STATUS(nf_pool_create(&cfg, be, &pool), NF_ERR_INVALID_ARG);
    nf_backend lacking = *be; /* a table that says it places blocks but cannot */
    lacking.block_alloc = NULL;
    cfg = nf_config_default();
    CHECK_STATUS(nf_pool_create(&cfg, &lacking, &pool), NF_ERR_INVALID_ARG);
    CHECK(pool == NULL);
    nf_backend_destroy(be);
}

static void random_operations(void) {
    nf_backend *be;
    REQUIRE(nf_backend_host_pool_create(0, &be) == NF_OK);
    nf_pool *pool = pool_on(be, 0);
    uint64_t seed = 11, freed = 0;
    int streams[2];
    void *p;
    for (int op = 0; op < OPS; op++) {
        uint64_t r = rng_below(&seed, 100);
        void *stream = &streams[rng_below(&seed, 2)];
        if (r < 3) {
            uint64_t group = 1 + rng_below(&seed, GROUPS - 1), want = expected_drop_group(live, SLOTS, group);
            CHECK_OK(nf_free_group(pool, group, stream, &freed));
            CHECK(freed == want);
        } else if (r < 6) {
            uint64_t released = 0;
            CHECK_OK(nf_trim(pool, rng_below(&seed, 64) * MIB, &released));
        } else {
            expected_block *e = &live[rng_below(&seed, SLOTS)];
            if (e->ptr) {
                if (r < 10) CHECK_OK(nf_record_stream(pool, e->ptr, &streams[0]));
                CHECK_OK(nf_free(pool, e->ptr, stream));
                e->ptr = NULL;
            } else {
                e->size = 1 + rng_below(&seed, rng_below(&seed, 8) ? 8192 : 6 * MIB);
                e->group = rng_below(&seed, GROUPS);
                e->fill = (unsigned char)(1 + rng_below(&seed, 255));
                CHECK_OK(nf_alloc_group(pool, e->size, stream, e->group, &p));
                e->ptr = p;
                CHECK(p && (uintptr_t)p % 512 == 0);
                if (p) memset(p, e->fill, e->size);
            }
        }
        CHECK_OK(nf_pool_check(pool));
        uint64_t expected_live = expected_check(pool, live, SLOTS, 97);
        nf_stats st;
        CHECK_OK(nf_stats_get(pool, &st));
        CHECK(st.allocation.current == expected_live);
        CHECK(st.reserved_bytes.current == backend_held(be) && st.reserved_bytes.current >= st.allocated_bytes.current);
        if (check_failed) break; /* one report is enough */
    }
    nf_stats st;
    CHECK_OK(nf_stats_get(pool, &st));
    CHECK(st.calls_block_alloc > 0 && st.calls_block_free > 0 && st.num_page_maps == 0 && st.calls_map == 0);
    CHECK(st.backend_calls == st.calls_block_alloc + st.calls_block_free + st.calls_trim_to);
    CHECK_OK(nf_pool_destroy(pool));
    nf_backend_destroy(be);
    memset(live, 0, sizeof live);
}

static void cap_on_held_memory(void) {
    nf_backend *be;
    REQUIRE(nf_backend_host_pool_create(0, &be) == NF_OK);
    nf_pool *pool = pool_on(be, 8 * MIB);
    void *small[8], *big = NULL, *extra = NULL;
    for (int i = 0; i < 8; i++) CHECK_OK(nf_alloc(pool, MIB, NULL, &small[i]));
    for (int i = 0; i < 8; i++) CHECK_OK(nf_free(pool, small[i], NULL));
    CHECK(backend_held(be) == 8 * MIB); /* cached: the stand-in keeps what was freed */
    /* 4 MiB fits under the cap only once cached 1 MiB pieces, which cannot serve it, go back. */
    CHECK_OK(nf_alloc(pool, 4 * MIB, NULL, &big));
    CHECK(big != NULL && backend_held(be) <= 8 * MIB);
    CHECK_OK(nf_pool_check(pool));
    /* Live bytes would pass the cap: fails, and nothing changes. */
    nf_stats before, after;
    CHECK_OK(nf_stats_get(pool, &before));
    CHECK_STATUS(nf_alloc(pool, 5 * MIB, NULL, &extra), NF_ERR_OUT_OF_MEMORY);
    CHECK(extra == NULL);
    CHECK_OK(nf_stats_get(pool, &after));
    CHECK(after.allocated_bytes.current == before.allocated_bytes.current &&
          after.allocation.current == before.allocation.current && after.num_alloc_failures == before.num_alloc_failures + 1);
    CHECK_STATUS(nf_alloc(pool, 9 * MIB, NULL, &extra), NF_ERR_OUT_OF_MEMORY); /* over the cap alone */
    CHECK_OK(nf_pool_check(pool));
    /* Lowering the cap under the live bytes: cached memory goes; the rest is slack until freed. */
    CHECK_OK(nf_alloc(pool, 3 * MIB, NULL, &extra));
    CHECK_OK(nf_pool_set_capacity(pool, 4 * MIB));
    CHECK_OK(nf_pool_check(pool));
    CHECK_OK(nf_free(pool, extra, NULL));
    CHECK_OK(nf_trim(pool, 0, NULL));
    CHECK(backend_held(be) == 4 * MIB);
    CHECK_STATUS(nf_alloc(pool, 2 * MIB, NULL, &extra), NF_ERR_OUT_OF_MEMORY); /* 4 live under a 4 MiB cap */
    CHECK_OK(nf_pool_check(pool));
    CHECK_OK(nf_free(pool, big, NULL));
    CHECK_OK(nf_pool_check(pool));
    CHECK_OK(nf_pool_destroy(pool));
    nf_backend_destroy(be);
}

static void full_device(void) {
    nf_backend *be;
    REQUIRE(nf_backend_host_pool_create(16 * MIB, &be) == NF_OK);
    nf_pool *pool = pool_on(be, 0);
    void *p[16], *big = NULL;
    for (int i = 0; i < 16; i++) CHECK_OK(nf_alloc(pool, MIB, NULL, &p[i]));
    for (int i = 0; i < 16; i += 2) CHECK_OK(nf_free(pool, p[i], NULL));
    /* 8 MiB live, 8 MiB cached in 1 MiB pieces: a 6 MiB request finds the device full and is met
     * after the cache goes back. */
    CHECK_OK(nf_alloc(pool, 6 * MIB, NULL, &big));
    CHECK(big != NULL);
    nf_stats st;
    CHECK_OK(nf_stats_get(pool, &st));
    CHECK(st.num_device_full == 1 && st.calls_trim_to == 1 && st.num_alloc_failures == 0);
    CHECK_OK(nf_pool_check(pool));
    /* Now truly full: fails as out of memory, the pool unchanged. */
    void *more = NULL;
    CHECK_STATUS(nf_alloc(pool, 4 * MIB, NULL, &more), NF_ERR_OUT_OF_MEMORY);
    CHECK(more == NULL);
    CHECK_OK(nf_pool_check(pool));
    CHECK_OK(nf_pool_destroy(pool)); /* with live blocks: all go back to the backend */
    CHECK(backend_held(be) == 16 * MIB - 2 * MIB); /* now cached, for the backend to free */
    nf_backend_destroy(be);
}

static void bad_frees_and_trim(void) {
    nf_backend *be;
    REQUIRE(nf_backend_host_pool_create(0, &be) == NF_OK);
    nf_pool *pool = pool_on(be, 0);
    void *a = NULL, *b = NULL;
    int not_ours;
    CHECK_OK(nf_alloc(pool, 3000, NULL, &a));
    CHECK_OK(nf_alloc(pool, 5000, NULL, &b));
    CHECK_OK(nf_free(pool, a, NULL));
    CHECK_STATUS(nf_free(pool, a, NULL), NF_ERR_DOUBLE_FREE);
    CHECK_STATUS(nf_free(pool, &not_ours, NULL), NF_ERR_INVALID_POINTER);
    CHECK_STATUS(nf_free(pool, (char *)b + 512, NULL), NF_ERR_INVALID_POINTER);
    CHECK_STATUS(nf_record_stream(pool, a, NULL), NF_ERR_INVALID_POINTER);
    nf_stats st;
    CHECK_OK(nf_stats_get(pool, &st));
    CHECK(st.num_invalid_frees == 3 && st.num_frees == 1 && st.allocation.current == 1);
    uint64_t released = 0;
    CHECK_OK(nf_trim(pool, 0, &released));
    CHECK(released == 3072 && backend_held(be) == 5120);
    CHECK_OK(nf_pool_check(pool));
    CHECK_STATUS(nf_pool_enable_peer_access(pool, -1), NF_ERR_UNSUPPORTED); /* no peers on the host */

    /* What the backend holds changing behind the pool's back (CUDA's pool gives cached memory to
     * other allocations under pressure) is read again by the statistics and the check. */
    uint64_t stolen = 0;
    CHECK(be->block_alloc(be->ctx, 4096, NULL, &stolen) == 0);
    CHECK_OK(nf_pool_check(pool));
    CHECK_OK(nf_stats_get(pool, &st));
    CHECK(st.reserved_bytes.current == 5120 + 4096);
    CHECK(be->block_free(be->ctx, stolen, NULL) == 0 && be->trim_to(be->ctx, 5120) == 0);
    CHECK_OK(nf_stats_get(pool, &st));
    CHECK(st.reserved_bytes.current == 5120 && st.idle_bytes.current == 0);
    CHECK_OK(nf_pool_destroy(pool));
    nf_backend_destroy(be);
}

/* The check catches books that disagree with the backend: memory taken from it behind the pool's
 * back passes the pool's cap (D3). */
static void check_catches_a_broken_cap(void) {
    nf_backend *be;
    REQUIRE(nf_backend_host_pool_create(0, &be) == NF_OK);
    nf_pool *pool = pool_on(be, 4 * MIB);
    void *a = NULL;
    CHECK_OK(nf_alloc(pool, 3 * MIB, NULL, &a));
    CHECK_OK(nf_pool_check(pool));
    uint64_t stolen = 0;
    CHECK(be->block_alloc(be->ctx, 2 * MIB, NULL, &stolen) == 0);
    CHECK_STATUS(nf_pool_check(pool), NF_ERR_CORRUPT);
    CHECK(be->block_free(be->ctx, stolen, NULL) == 0 && be->trim_to(be->ctx, 3 * MIB) == 0);
    CHECK_OK(nf_pool_check(pool));
    CHECK_OK(nf_free(pool, a, NULL));
    CHECK_OK(nf_pool_destroy(pool));
    nf_backend_destroy(be);
}

/* Driver failures (codes other than out of memory) in each block primitive: the call fails with
 * NF_ERR_BACKEND, the books stay true (invariants), a block whose free failed stays live with its
 * bytes and can be freed again. */
static nf_backend *failing_inner;
static int fail_alloc, fail_free, fail_held; /* the next call of each fails when set */

static int failing_block_alloc(void *c, uint64_t bytes, void *stream, uint64_t *addr_out) {
    if (fail_alloc) return fail_alloc = 0, 5;
    return failing_inner->block_alloc(c, bytes, stream, addr_out);
}
static int failing_block_free(void *c, uint64_t addr, void *stream) {
    if (fail_free) return fail_free = 0, 5;
    return failing_inner->block_free(c, addr, stream);
}
static int failing_held_bytes(void *c, uint64_t *bytes_out) {
    if (fail_held) return fail_held = 0, 5;
    return failing_inner->held_bytes(c, bytes_out);
}

static void driver_failures(void) {
    REQUIRE(nf_backend_host_pool_create(0, &failing_inner) == NF_OK);
    nf_backend failing = *failing_inner;
    failing.block_alloc = failing_block_alloc;
    failing.block_free = failing_block_free;
    failing.held_bytes = failing_held_bytes;
    nf_pool *pool = pool_on(&failing, 0);
    unsigned char *a = NULL, *b = NULL;
    CHECK_OK(nf_alloc(pool, 3 * MIB, NULL, (void **)&a));
    memset(a, 0xa5, 3 * MIB);
    nf_stats before, after;
    CHECK_OK(nf_stats_get(pool, &before));

    fail_alloc = 1; /* the backend fails the request */
    CHECK_STATUS(nf_alloc(pool, MIB, NULL, (void **)&b), NF_ERR_BACKEND);
    CHECK(b == NULL);
    fail_held = 1; /* the request succeeds, reading what is held fails: the block goes back */
    CHECK_STATUS(nf_alloc(pool, MIB, NULL, (void **)&b), NF_ERR_BACKEND);
    CHECK(b == NULL);
    CHECK_OK(nf_pool_check(pool));
    CHECK_OK(nf_stats_get(pool, &after));
    CHECK(after.allocated_bytes.current == before.allocated_bytes.current && after.allocation.current == 1);

    fail_free = 1; /* the free fails: the block stays live, bytes and all */
    CHECK_STATUS(nf_free(pool, a, NULL), NF_ERR_BACKEND);
    CHECK_OK(nf_pool_check(pool));
    CHECK_OK(nf_stats_get(pool, &after));
    CHECK(after.allocation.current == 1 && after.num_frees == 0);
    bool intact = true;
    for (size_t i = 0; i < 3 * MIB; i += 4093) intact &= a[i] == 0xa5;
    CHECK(intact);
    CHECK_OK(nf_free(pool, a, NULL)); /* and frees the second time */
    CHECK_STATUS(nf_free(pool, a, NULL), NF_ERR_DOUBLE_FREE);
    CHECK_OK(nf_pool_check(pool));
    CHECK_OK(nf_pool_destroy(pool));
    nf_backend_destroy(failing_inner);
}

int main(void) {
    refused_configs();
    random_operations();
    cap_on_held_memory();
    full_device();
    bad_frees_and_trim();
    check_catches_a_broken_cap();
    driver_failures();
    return check_exit("test_block_backend");
}
