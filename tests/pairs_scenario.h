/* One scenario of pairs of pages (nf_config.pair_min_pages), run on the host backend
 * (test_pairs) and on a GPU (test_cuda_backend) with the same expected figures: pairs made
 * inside blocks, a block too large for the hole its predecessor left going higher up onto a pair
 * made for it and two idle pairs mapped at new places, a one-page block claiming half of an idle
 * pair, and a trim that unmaps every place of every pair (two pages a call) and releases them. */
#ifndef NOFRAG_TESTS_PAIRS_SCENARIO_H
#define NOFRAG_TESTS_PAIRS_SCENARIO_H

#include "check.h"

static void pairs_scenario(nf_backend *be) {
    const uint64_t P = be->granularity;
    nf_config cfg = nf_config_default();
    cfg.capacity = 8 * P;
    cfg.pair_min_pages = 2;
    cfg.log = test_log;
    nf_pool *pool;
    REQUIRE(nf_pool_create(&cfg, be, &pool) == NF_OK);
    nf_stats st;
    void *a, *b, *c, *d;
    CHECK_OK(nf_alloc(pool, 4 * P, NULL, &a)); /* pages 0-3: pairs at 0 and 2 */
    CHECK_OK(nf_alloc(pool, 2 * P, NULL, &b)); /* pages 4-5: a pair at 4 */
    CHECK_OK(nf_stats_get(pool, &st));
    CHECK(st.num_pairs_made == 3 && st.calls_page_create == 3 && st.reserved_bytes.current == 6 * P);
    CHECK(st.calls_map == 3 && st.num_remaps == 0);
    CHECK_OK(nf_pool_check(pool));
    CHECK_OK(nf_free(pool, a, NULL));
    /* Six pages do not fit the four-page hole: pages 6-11, one pair made (the cap allows two more
     * pages), the two idle pairs mapped there too, keeping their first places. */
    CHECK_OK(nf_alloc(pool, 6 * P, NULL, &c));
    CHECK((uintptr_t)c == (uintptr_t)b + 2 * P);
    CHECK_OK(nf_stats_get(pool, &st));
    CHECK(st.num_pairs_made == 4 && st.calls_page_create == 4 && st.reserved_bytes.current == 8 * P);
    CHECK(st.num_remaps == 2 && st.calls_map == 6 && st.mapped_bytes.current == 12 * P); /* 6 places */
    CHECK_OK(nf_pool_check(pool));
    /* Nothing idle, nothing to make: a page more fails under the cap. */
    void *none;
    CHECK_STATUS(nf_alloc(pool, P, NULL, &none), NF_ERR_OUT_OF_MEMORY);
    CHECK_OK(nf_free(pool, c, NULL));
    /* One page at the front of the hole (page 0): it claims the pair mapped at 0 whole. */
    CHECK_OK(nf_alloc(pool, P, NULL, &d));
    CHECK_OK(nf_stats_get(pool, &st));
    CHECK(st.calls_map == 6 && st.idle_bytes.current == 4 * P); /* of 8: B's pair and d's pair busy */
    CHECK_OK(nf_pool_check(pool));
    CHECK_OK(nf_free(pool, d, NULL));
    CHECK_OK(nf_free(pool, b, NULL));
    uint64_t released;
    CHECK_OK(nf_trim(pool, 0, &released));
    CHECK(released == 8 * P);
    CHECK_OK(nf_stats_get(pool, &st));
    CHECK(st.calls_page_release == 4 && st.num_page_unmaps == 6 && st.mapped_bytes.current == 0);
    CHECK_OK(nf_pool_check(pool));
    CHECK_OK(nf_pool_destroy(pool));
}

#endif
