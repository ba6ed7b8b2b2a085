/* Pairs of pages (nf_config.pair_min_pages) on the host backend: the scenario test_cuda_backend
 * runs on a GPU, with the same figures, on the accounting backend and on real memory; and with
 * pairs off, the pool makes none. Random workloads with pairs are in test_random, test_integrity
 * and test_backend_failures. */
#include "pairs_scenario.h"

int main(void) {
    nf_backend *be;
    REQUIRE(nf_backend_host_create(false, 2ull << 20, &be) == NF_OK);
    pairs_scenario(be);
    CHECK(nf_host_all_released(be));
    nf_backend_destroy(be);
    REQUIRE(nf_backend_host_create(true, 64 * 1024, &be) == NF_OK);
    pairs_scenario(be);
    CHECK(nf_host_all_released(be));
    nf_backend_destroy(be);

    /* Off (the default): the same blocks on single pages. */
    REQUIRE(nf_backend_host_create(false, 2ull << 20, &be) == NF_OK);
    nf_pool *pool = NULL;
    nf_config cfg = nf_config_default();
    REQUIRE(nf_pool_create(&cfg, be, &pool) == NF_OK);
    void *a;
    CHECK_OK(nf_alloc(pool, 8 * be->granularity, NULL, &a));
    nf_stats st;
    CHECK_OK(nf_stats_get(pool, &st));
    CHECK(st.num_pairs_made == 0 && st.calls_page_create == 8);
    CHECK_OK(nf_free(pool, a, NULL));
    test_pool_close(pool, be);
    return check_exit("test_pairs");
}
