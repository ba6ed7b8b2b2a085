/* The CUDA backend through the public API, without kernels (gpu/ has the kernel-driven stress
 * test). Exits 77 (skipped) where no GPU or driver answers, as on CI. */
#include <string.h>

#include "check.h"

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
    nf_backend_destroy(be);
    return check_exit("test_cuda_backend");
}
