/* nf_config.reserve_bytes: the pool makes that much physical memory when created and holds it for
 * its life. Checks: the pages exist before any request; requests use them before the pool makes
 * more; nf_trim and a lowered cap give back nothing below the reserve but do give back what lies
 * above it; a reserve the device cannot hold fails creation cleanly (out of memory, nothing left
 * behind); bad reserves are refused. The invariants (I16: physical pages >= reserve) are checked
 * after every step. */
#include "limited_device.h"

enum { GRAN = 64 * 1024 };

static uint64_t held_pages(nf_pool *pool) {
    nf_stats st;
    CHECK_OK(nf_stats_get(pool, &st));
    return st.reserved_bytes.current / GRAN;
}

int main(void) {
    nf_backend wrapped = limited_device(GRAN);
    nf_config cfg = nf_config_default();
    cfg.virtual_bytes = 256 * GRAN;
    cfg.log = test_log;

    /* Bad reserves: over the cap, over the address space, with pinned pages. */
    nf_pool *pool = NULL;
    cfg.capacity = 8 * GRAN;
    cfg.reserve_bytes = 9 * GRAN;
    CHECK_STATUS(nf_pool_create(&cfg, &wrapped, &pool), NF_ERR_INVALID_ARG);
    cfg.capacity = 0;
    cfg.reserve_bytes = 257 * GRAN;
    CHECK_STATUS(nf_pool_create(&cfg, &wrapped, &pool), NF_ERR_INVALID_ARG);
    cfg.reserve_bytes = GRAN;
    cfg.pin_pages = true;
    CHECK_STATUS(nf_pool_create(&cfg, &wrapped, &pool), NF_ERR_INVALID_ARG);
    cfg.pin_pages = false;
    CHECK(pool == NULL && limited_live_pages == 0);

    /* A reserve the device cannot hold: out of memory, and every page made so far given back. */
    limited_device_pages = 5;
    cfg.reserve_bytes = 6 * GRAN;
    CHECK_STATUS(nf_pool_create(&cfg, &wrapped, &pool), NF_ERR_OUT_OF_MEMORY);
    CHECK(pool == NULL && limited_live_pages == 0);
    limited_device_pages = UINT64_MAX;
    limited_create_calls = 0;

    /* 10 pages and a bit, no cap: 11 pages made at once. */
    cfg.reserve_bytes = 10 * GRAN + 1;
    REQUIRE(nf_pool_create(&cfg, &wrapped, &pool) == NF_OK);
    CHECK(held_pages(pool) == 11 && limited_create_calls == 11);
    CHECK_OK(nf_pool_check(pool));

    /* Requests within the reserve make no page; their bytes are backed. */
    void *a, *b, *c;
    CHECK_OK(nf_alloc(pool, 6 * GRAN, NULL, &a));
    CHECK_OK(nf_alloc(pool, 4 * GRAN, NULL, &b));
    CHECK(limited_create_calls == 11 && held_pages(pool) == 11);
    ((unsigned char *)a)[6 * GRAN - 1] = 1;
    ((unsigned char *)b)[0] = 2;
    CHECK_OK(nf_pool_check(pool));

    /* Beyond it, pages are made; freed and trimmed, the pool goes back to the reserve, no lower. */
    CHECK_OK(nf_alloc(pool, 8 * GRAN, NULL, &c));
    CHECK(held_pages(pool) == 18);
    CHECK_OK(nf_free(pool, a, NULL));
    CHECK_OK(nf_free(pool, b, NULL));
    CHECK_OK(nf_free(pool, c, NULL));
    uint64_t released = 0;
    CHECK_OK(nf_trim(pool, 0, &released));
    CHECK(released == 7 * GRAN && held_pages(pool) == 11);
    CHECK_OK(nf_pool_set_capacity(pool, 2 * GRAN));
    CHECK(held_pages(pool) == 11);
    CHECK_OK(nf_pool_check(pool));
    CHECK_OK(nf_pool_set_capacity(pool, 0));

    /* Used again after the trim (the pool may regrow towards its earlier peak, as without a
     * reserve, but never holds less than the reserve). */
    CHECK_OK(nf_alloc(pool, 11 * GRAN, NULL, &a));
    CHECK(held_pages(pool) >= 11 && held_pages(pool) <= 18);
    CHECK_OK(nf_free(pool, a, NULL));
    CHECK_OK(nf_pool_check(pool));
    CHECK_OK(nf_pool_destroy(pool));
    CHECK(limited_live_pages == 0 && nf_host_all_released(limited_inner));
    nf_backend_destroy(limited_inner);
    return check_exit("test_reserve");
}
