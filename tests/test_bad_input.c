/* Bad input: each gets a defined status, and the pool stays consistent afterwards. */
#include <stdint.h>

#include "check.h"

static int errors_logged;
static void counting_log(void *user, nf_log_level level, const char *message) {
    (void)user;
    (void)message;
    if (level <= NF_LOG_WARN) errors_logged++;
}

int main(void) {
    nf_backend *be;
    REQUIRE(nf_backend_host_create(false, 0, &be) == NF_OK);
    nf_config cfg = nf_config_default();
    cfg.capacity = 64ull << 20;
    cfg.log = counting_log;
    nf_pool *pool;

    /* NULL pool, config, backend and out-parameters. */
    CHECK_STATUS(nf_pool_create(NULL, be, &pool), NF_ERR_INVALID_ARG);
    CHECK_STATUS(nf_pool_create(&cfg, NULL, &pool), NF_ERR_INVALID_ARG);
    CHECK_STATUS(nf_pool_create(&cfg, be, NULL), NF_ERR_INVALID_ARG);
    void *p = (void *)1;
    CHECK_STATUS(nf_alloc(NULL, 16, NULL, &p), NF_ERR_INVALID_ARG);
    CHECK_STATUS(nf_free(NULL, p, NULL), NF_ERR_INVALID_ARG);
    CHECK_STATUS(nf_stats_get(NULL, NULL), NF_ERR_INVALID_ARG);
    CHECK_STATUS(nf_pool_check(NULL), NF_ERR_INVALID_ARG);
    CHECK_STATUS(nf_trim(NULL, 0, NULL), NF_ERR_INVALID_ARG);
    CHECK_STATUS(nf_step_mark(NULL), NF_ERR_INVALID_ARG);
    CHECK_STATUS(nf_pool_walk(NULL, NULL, NULL), NF_ERR_INVALID_ARG);
    CHECK_OK(nf_pool_destroy(NULL));
    nf_backend *other = (nf_backend *)1;
    CHECK_STATUS(nf_backend_host_create(false, 12345, &other), NF_ERR_INVALID_ARG);
    CHECK(other == NULL);
    CHECK_STATUS(nf_backend_host_create(false, 0, NULL), NF_ERR_INVALID_ARG);

    /* A zero-initialised config is valid: alignment 0 means the default, 512 bytes. */
    nf_config zero = {0};
    REQUIRE(nf_pool_create(&zero, be, &pool) == NF_OK);
    void *first, *second;
    CHECK_OK(nf_alloc(pool, 1, NULL, &first));
    CHECK_OK(nf_alloc(pool, 1, NULL, &second));
    uintptr_t x = (uintptr_t)first, y = (uintptr_t)second;
    CHECK(x % 512 == 0 && y % 512 == 0 && (y > x ? y - x : x - y) == 512);
    CHECK_OK(nf_pool_check(pool));
    CHECK_OK(nf_pool_destroy(pool));

    /* Bad config values. */
    nf_config bad = cfg;
    bad.alignment = 100;
    CHECK_STATUS(nf_pool_create(&bad, be, &pool), NF_ERR_INVALID_ARG);
    bad = cfg;
    bad.alignment = 128;
    CHECK_STATUS(nf_pool_create(&bad, be, &pool), NF_ERR_INVALID_ARG);
    bad = cfg;
    bad.virtual_bytes = cfg.capacity / 2;
    CHECK_STATUS(nf_pool_create(&bad, be, &pool), NF_ERR_INVALID_ARG);
    /* A cap under one page could hold nothing (and rounding it to 0 pages would mean no cap). */
    bad = cfg;
    bad.capacity = be->granularity - 1;
    CHECK_STATUS(nf_pool_create(&bad, be, &pool), NF_ERR_INVALID_ARG);
    /* Page sizes: a power-of-two multiple of the backend's granularity, or 0. */
    bad = cfg;
    bad.page_bytes = 3 * be->granularity;
    CHECK_STATUS(nf_pool_create(&bad, be, &pool), NF_ERR_INVALID_ARG);
    bad.page_bytes = be->granularity / 2;
    CHECK_STATUS(nf_pool_create(&bad, be, &pool), NF_ERR_INVALID_ARG);
    bad.page_bytes = 4 * be->granularity;
    REQUIRE(nf_pool_create(&bad, be, &pool) == NF_OK);
    {
        nf_stats st;
        CHECK_OK(nf_stats_get(pool, &st));
        CHECK(st.granularity_bytes == 4 * be->granularity);
        CHECK_OK(nf_pool_destroy(pool));
    }

    REQUIRE(nf_pool_create(&cfg, be, &pool) == NF_OK);
    CHECK_STATUS(nf_alloc(pool, 16, NULL, NULL), NF_ERR_INVALID_ARG);

    /* Size 0: success with NULL, and NULL frees as a no-op. */
    CHECK_OK(nf_alloc(pool, 0, NULL, &p));
    CHECK(p == NULL);
    CHECK_OK(nf_free(pool, NULL, NULL));

    /* Above capacity, and SIZE_MAX (whose rounding would overflow). */
    int logged = errors_logged;
    CHECK_STATUS(nf_alloc(pool, (64ull << 20) + 1, NULL, &p), NF_ERR_OUT_OF_MEMORY);
    CHECK(p == NULL);
    CHECK(errors_logged == logged + 1); /* the out-of-memory report */
    CHECK_STATUS(nf_alloc(pool, SIZE_MAX, NULL, &p), NF_ERR_OUT_OF_MEMORY);
    CHECK_STATUS(nf_alloc(pool, SIZE_MAX - 100, NULL, &p), NF_ERR_OUT_OF_MEMORY);
    CHECK_OK(nf_pool_check(pool));

    void *a, *b;
    CHECK_OK(nf_alloc(pool, 10000, NULL, &a));
    CHECK_OK(nf_alloc(pool, 10000, NULL, &b));
    /* Interior pointer, pointer never allocated, pointer outside the pool. */
    CHECK_STATUS(nf_free(pool, (char *)a + 512, NULL), NF_ERR_INVALID_POINTER);
    CHECK_STATUS(nf_free(pool, (char *)b + 20480, NULL), NF_ERR_INVALID_POINTER); /* inside free space */
    CHECK_STATUS(nf_free(pool, (void *)0x1000, NULL), NF_ERR_INVALID_POINTER);
    CHECK_OK(nf_pool_check(pool));
    /* Double free: of a block whose neighbour is live (stays a block of its own) and of one that
     * coalesced into a larger free block. */
    CHECK_OK(nf_free(pool, a, NULL));
    CHECK_STATUS(nf_free(pool, a, NULL), NF_ERR_DOUBLE_FREE);
    CHECK_OK(nf_free(pool, b, NULL));
    CHECK_STATUS(nf_free(pool, b, NULL), NF_ERR_DOUBLE_FREE);
    CHECK_OK(nf_pool_check(pool));
    nf_stats st;
    CHECK_OK(nf_stats_get(pool, &st));
    CHECK(st.num_invalid_frees == 5);
    CHECK(st.num_alloc_failures == 3);
    CHECK(st.allocation.current == 0 && st.num_allocs == 2 && st.num_frees == 2);

    /* Out of memory under the cap leaves the pool as it was. */
    void *big[40];
    int n = 0;
    while (n < 40 && nf_alloc(pool, 3u << 20, NULL, &big[n]) == NF_OK) n++;
    CHECK(n == 21); /* 64 MiB / 3 MiB, with 2 MiB pages: 21 blocks use 63 MiB */
    CHECK_OK(nf_pool_check(pool));
    CHECK_STATUS(nf_alloc(pool, 3u << 20, NULL, &p), NF_ERR_OUT_OF_MEMORY);
    CHECK_OK(nf_pool_check(pool));
    for (int i = 0; i < n; i++) CHECK_OK(nf_free(pool, big[i], NULL));
    CHECK_OK(nf_pool_check(pool));

    CHECK(nf_status_str(NF_OK)[0] != '\0');
    CHECK(nf_status_str((nf_status)999) != NULL);
    CHECK_OK(nf_pool_destroy(pool));
    nf_backend_destroy(be);
    return check_exit("test_bad_input");
}
