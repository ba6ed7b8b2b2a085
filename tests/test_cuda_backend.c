/* The CUDA backend through the public API, without kernels (gpu/ has the kernel-driven stress
 * test). Exits 77 (skipped) where no GPU or driver answers, as on CI. */
#include <string.h>

#include "check.h"
#include "pairs_scenario.h"

/* Eight pages under a cap of eight, half freed, then a block of two pages: the idle pages must
 * move to a fresh place. Page size P (nf_config.page_bytes). */
static void pages_scenario(nf_backend *be, uint64_t P) {
    nf_config cfg = nf_config_default();
    cfg.capacity = 8 * P;
    cfg.page_bytes = P;
    cfg.log = test_log;
    nf_pool *pool;
    REQUIRE(nf_pool_create(&cfg, be, &pool) == NF_OK);
    void *p[8];
    for (int i = 0; i < 8; i++) CHECK_OK(nf_alloc(pool, P, NULL, &p[i]));
    void *extra;
    CHECK_STATUS(nf_alloc(pool, P, NULL, &extra), NF_ERR_OUT_OF_MEMORY);
    for (int i = 0; i < 8; i += 2) CHECK_OK(nf_free(pool, p[i], NULL));
    void *two;
    CHECK_OK(nf_alloc(pool, 2 * P, NULL, &two));
    CHECK_OK(nf_pool_check(pool));
    nf_stats st;
    CHECK_OK(nf_stats_get(pool, &st));
    CHECK(st.num_remaps == 2);
    CHECK(st.reserved_bytes.peak == 8 * P);
    CHECK(st.calls_page_create == 8);
    CHECK_OK(nf_free(pool, two, NULL));
    for (int i = 1; i < 8; i += 2) CHECK_OK(nf_free(pool, p[i], NULL));
    uint64_t released;
    CHECK_OK(nf_trim(pool, 0, &released));
    CHECK(released == 8 * P);
    CHECK_OK(nf_pool_check(pool));
    CHECK_OK(nf_pool_destroy(pool));
}

/* CUDA's memory pool under nofrag's books: a cap of 64 MiB on held memory, frees on two streams,
 * a trim, then the whole device filled until the driver says no (the pool must fail cleanly, out
 * of memory, after giving its cache back) and everything given back. */
static void memory_pool_scenario(void) {
    nf_backend *be = NULL;
    nf_status s = nf_backend_cuda_pool_create(0, false, test_log, NULL, &be);
    REQUIRE(s == NF_OK);
    CHECK(strcmp(be->name, "cuda-pool") == 0 && (be->caps & NF_BACKEND_CAP_PLACES_BLOCKS));
    enum { MIB = 1 << 20 };
    nf_config cfg = nf_config_default();
    cfg.capacity = 64 * MIB;
    cfg.log = test_log;
    nf_pool *pool;
    REQUIRE(nf_pool_create(&cfg, be, &pool) == NF_OK);
    void *p[8], *big = NULL;
    void *legacy = (void *)(uintptr_t)1; /* CU_STREAM_LEGACY: a second valid stream handle */
    for (int i = 0; i < 8; i++) {
        CHECK_OK(nf_alloc(pool, 4 * MIB, i % 2 ? legacy : NULL, &p[i]));
        CHECK_OK(nf_pool_check(pool));
    }
    CHECK_STATUS(nf_alloc(pool, 40 * MIB, NULL, &big), NF_ERR_OUT_OF_MEMORY); /* 32 live + 40 > 64 */
    CHECK_OK(nf_record_stream(pool, p[0], legacy));
    for (int i = 0; i < 8; i += 2) CHECK_OK(nf_free(pool, p[i], NULL));
    CHECK_OK(nf_pool_check(pool));
    CHECK_OK(nf_alloc(pool, 24 * MIB, NULL, &big)); /* fits once the cache is given back if need be */
    CHECK_OK(nf_pool_check(pool));
    nf_stats st;
    CHECK_OK(nf_stats_get(pool, &st));
    CHECK(st.reserved_bytes.peak <= 64 * MIB && st.allocated_bytes.current == 40 * MIB);
    CHECK(st.calls_stream_wait >= 1); /* p[0]'s free waited for the legacy stream's work */
    CHECK_OK(nf_free(pool, big, NULL));
    for (int i = 1; i < 8; i += 2) CHECK_OK(nf_free(pool, p[i], legacy));
    uint64_t released = 0;
    CHECK_OK(nf_trim(pool, 0, &released));
    CHECK_OK(nf_stats_get(pool, &st));
    CHECK(st.reserved_bytes.current == 0 && released > 0);
    CHECK_OK(nf_pool_destroy(pool));

    /* No cap: fill the device in 1 GiB blocks until the driver has no more. */
    cfg.capacity = 0;
    REQUIRE(nf_pool_create(&cfg, be, &pool) == NF_OK);
    enum { MAX_BLOCKS = 1024 };
    static void *blocks[MAX_BLOCKS];
    int n = 0;
    while (n < MAX_BLOCKS && (s = nf_alloc(pool, 1ull << 30, NULL, &blocks[n])) == NF_OK) n++;
    CHECK_STATUS(s, NF_ERR_OUT_OF_MEMORY);
    CHECK(n > 0);
    CHECK_OK(nf_stats_get(pool, &st));
    CHECK(st.num_alloc_failures == 1 && st.num_device_full >= 1 && st.calls_trim_to >= 1);
    printf("  cuda-pool: %d GiB allocated before the device was full\n", n);
    CHECK_OK(nf_pool_check(pool));
    for (int i = 0; i < n; i++) CHECK_OK(nf_free(pool, blocks[i], NULL));
    CHECK_OK(nf_trim(pool, 0, NULL));
    CHECK_OK(nf_stats_get(pool, &st));
    CHECK(st.reserved_bytes.current == 0);
    CHECK_OK(nf_pool_check(pool));
    CHECK_OK(nf_pool_destroy(pool));
    nf_backend_destroy(be);
}

int main(void) {
    nf_backend *be = (nf_backend *)1;
    nf_status s = nf_backend_cuda_create(0, true, test_log, NULL, &be);
    if (s == NF_ERR_UNSUPPORTED) {
        CHECK(be == NULL);
        uint64_t f, t;
        CHECK_STATUS(nf_cuda_mem_info(0, &f, &t), NF_ERR_UNSUPPORTED);
        printf("test_cuda_backend: no CUDA driver or device here: skipped\n");
        return 77;
    }
    REQUIRE(s == NF_OK);
    CHECK(strcmp(be->name, "cuda") == 0);
    CHECK(be->granularity >= 4096 && (be->granularity & (be->granularity - 1)) == 0);
    CHECK(be->caps & NF_BACKEND_CAP_EVENTS);
    nf_backend *none;
    CHECK_STATUS(nf_backend_cuda_create(4096, false, NULL, NULL, &none), NF_ERR_INVALID_ARG);
    uint64_t free_bytes = 0, total = 0;
    CHECK_OK(nf_cuda_mem_info(0, &free_bytes, &total));
    CHECK(free_bytes > 0 && free_bytes <= total);

    /* The pool's pages: the device's granularity, then 4 granules each (one handle per page). */
    pages_scenario(be, be->granularity);
    pages_scenario(be, 4 * be->granularity);
    /* Pairs of pages: handles of two granules, mapped, moved, unmapped and released whole. */
    pairs_scenario(be);
    nf_backend_destroy(be);
    memory_pool_scenario();
    return check_exit("test_cuda_backend");
}
