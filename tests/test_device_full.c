/* When the device runs out of memory below the pool's cap (memory taken outside the pool: NCCL's
 * buffers, another process), page_create fails with NF_BACKEND_OUT_OF_MEMORY. The pool must then
 * serve requests from the idle pages it holds, not fail them, stop asking for new pages while
 * idle ones serve, ask again before failing a request they cannot serve (the memory may be back),
 * and fail with NF_ERR_OUT_OF_MEMORY (not a backend error) only when the device still refuses. The device is tests/limited_device.h's, whose size is set here. */
#include "limited_device.h"

enum { GRAN = 64 * 1024 };

static nf_stats stats_of(nf_pool *pool) {
    nf_stats st;
    CHECK_OK(nf_stats_get(pool, &st));
    return st;
}

int main(void) {
    nf_backend wrapped = limited_device(GRAN);
    nf_config cfg = nf_config_default();
    cfg.capacity = 64 * GRAN; /* a budget far above what the "device" will give */
    cfg.virtual_bytes = 256 * GRAN;
    cfg.log = test_log;
    nf_pool *pool;
    REQUIRE(nf_pool_create(&cfg, &wrapped, &pool) == NF_OK);

    /* A, B, C of 4 pages each, one-page blocks X and Y between them; A and B freed: two holes of
     * 4 idle pages, 14 pages held. */
    void *a, *b, *c, *x, *y, *d, *e;
    CHECK_OK(nf_alloc(pool, 4 * GRAN, NULL, &a));
    CHECK_OK(nf_alloc(pool, 1 * GRAN, NULL, &x));
    CHECK_OK(nf_alloc(pool, 4 * GRAN, NULL, &b));
    CHECK_OK(nf_alloc(pool, 1 * GRAN, NULL, &y));
    CHECK_OK(nf_alloc(pool, 4 * GRAN, NULL, &c));
    CHECK_OK(nf_free(pool, a, NULL));
    CHECK_OK(nf_free(pool, b, NULL));
    CHECK(stats_of(pool).reserved_bytes.current == 14 * GRAN);

    /* Something else takes the rest of the device. D (6 pages) fits neither hole; the pool would
     * create pages under its budget, the device refuses, and the holes' idle pages serve instead. */
    limited_device_pages = limited_live_pages;
    CHECK_OK(nf_alloc(pool, 6 * GRAN, NULL, &d));
    nf_stats st = stats_of(pool);
    CHECK(st.num_device_full >= 1);
    CHECK(st.reserved_bytes.current == 14 * GRAN);
    CHECK(st.num_alloc_failures == 0);
    CHECK_OK(nf_pool_check(pool));
    if (d) {
        unsigned char *bytes = d;
        bytes[0] = 1;
        bytes[6 * GRAN - 1] = 2; /* every page of D is backed */
    }

    /* The device is known full: a request needing a page more than its place has idle takes an
     * idle page from elsewhere without asking the device again. */
    CHECK_OK(nf_free(pool, d, NULL));
    int creates_before = limited_create_calls;
    CHECK_OK(nf_alloc(pool, 7 * GRAN, NULL, &e));
    CHECK(limited_create_calls == creates_before);
    CHECK_OK(nf_free(pool, e, NULL));

    /* More than the pool holds: the device is asked again (it may have room by now), still
     * refuses, and the request fails cleanly as out of memory, the pool consistent. */
    void *big = NULL;
    creates_before = limited_create_calls;
    CHECK_STATUS(nf_alloc(pool, 20 * GRAN, NULL, &big), NF_ERR_OUT_OF_MEMORY);
    CHECK(big == NULL);
    CHECK(limited_create_calls > creates_before && stats_of(pool).num_alloc_failures == 1);
    CHECK_OK(nf_pool_check(pool));

    /* The other user gives memory back: the next request that the idle pages cannot serve asks
     * the device again and gets its pages, with no trim needed (a GPU run stayed refused until a
     * trim before this). */
    limited_device_pages = UINT64_MAX;
    creates_before = limited_create_calls;
    CHECK_OK(nf_alloc(pool, 20 * GRAN, NULL, &big));
    CHECK(limited_create_calls > creates_before);
    CHECK_OK(nf_pool_check(pool));
    CHECK_OK(nf_free(pool, big, NULL));
    CHECK_OK(nf_trim(pool, 0, NULL));
    CHECK_OK(nf_alloc(pool, 20 * GRAN, NULL, &big));
    CHECK_OK(nf_pool_check(pool));

    CHECK_OK(nf_free(pool, big, NULL));
    CHECK_OK(nf_free(pool, x, NULL));
    CHECK_OK(nf_free(pool, y, NULL));
    CHECK_OK(nf_free(pool, c, NULL));
    CHECK_OK(nf_pool_check(pool));
    CHECK_OK(nf_pool_destroy(pool));
    CHECK(nf_host_all_released(limited_inner));
    nf_backend_destroy(limited_inner);
    return check_exit("test_device_full");
}
