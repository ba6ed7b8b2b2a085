/* The CUDA backend through the public API, without kernels (gpu/ has the kernel-driven stress
 * test). Exits 77 (skipped) where no GPU or driver answers, as on CI. */
#include <string.h>

#include "check.h"

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

    const uint64_t G = be->granularity;
    nf_config cfg = nf_config_default();
    cfg.capacity = 8 * G;
    cfg.log = test_log;
    nf_pool *pool;
    REQUIRE(nf_pool_create(&cfg, be, &pool) == NF_OK);
    void *p[8];
    for (int i = 0; i < 8; i++) CHECK_OK(nf_alloc(pool, G, NULL, &p[i]));
    void *extra;
    CHECK_STATUS(nf_alloc(pool, G, NULL, &extra), NF_ERR_OUT_OF_MEMORY);
    for (int i = 0; i < 8; i += 2) CHECK_OK(nf_free(pool, p[i], NULL));
    /* Two pages' worth in one block: idle pages must move to a fresh place. */
    void *two;
    CHECK_OK(nf_alloc(pool, 2 * G, NULL, &two));
    CHECK_OK(nf_pool_check(pool));
    nf_stats st;
    CHECK_OK(nf_stats_get(pool, &st));
    CHECK(st.num_remaps == 2);
    CHECK(st.reserved_bytes.peak == 8 * G);
    CHECK_OK(nf_free(pool, two, NULL));
    for (int i = 1; i < 8; i += 2) CHECK_OK(nf_free(pool, p[i], NULL));
    uint64_t released;
    CHECK_OK(nf_trim(pool, 0, &released));
    CHECK(released == 8 * G);
    CHECK_OK(nf_pool_check(pool));
    CHECK_OK(nf_pool_destroy(pool));
    nf_backend_destroy(be);
    return check_exit("test_cuda_backend");
}
