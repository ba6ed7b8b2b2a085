/* Data integrity on real host memory: every block carries a pattern of its own, written at
 * allocation and verified in full at free, while a tight cap forces pages to be unmapped and mapped
 * elsewhere. A page moved while a live block still used it, or two blocks sharing bytes, shows up
 * as a corrupt byte. */
#include <string.h>

#include "check.h"

typedef struct live_block {
    uint64_t *ptr;
    size_t words;
    uint64_t tag;
} live_block;

static uint64_t pattern(uint64_t tag, size_t i) { return tag * 0x9e3779b97f4a7c15ull ^ (i * 0x2545f4914f6cdd1dull); }

static void fill(const live_block *b) {
    for (size_t i = 0; i < b->words; i++) b->ptr[i] = pattern(b->tag, i);
}

static uint64_t corrupt_words(const live_block *b) {
    uint64_t bad = 0;
    for (size_t i = 0; i < b->words; i++) bad += b->ptr[i] != pattern(b->tag, i);
    return bad;
}

static uint64_t pairs_made; /* by every run_pairs so far */

/* page_factor: the pool's page is that many of the backend's granules (nf_config.page_bytes), so
 * each physical page is one multi-granule handle, mapped and aliased whole. hold: the cap is a
 * limit only (nf_config.hold_near_live): pages move at about 2% above the live peak instead.
 * pair_min: nf_config.pair_min_pages (0: single pages only). */
static void run_pairs(uint64_t seed, uint64_t gran, uint64_t page_factor, uint64_t cap_pages, bool hold, int ops,
                      uint64_t pair_min, uint64_t *remaps_out) {
    uint64_t rng = seed;
    nf_backend *backend;
    uint64_t page = page_factor * gran;
    test_pool_spec spec = {.real_memory = true, .gran = gran, .page_bytes = page, .capacity = cap_pages * page,
                           .hold_near_live = hold, .pair_min_pages = pair_min};
    nf_pool *pool = test_pool(&spec, &backend);
    REQUIRE(backend->caps & NF_BACKEND_CAP_HOST_ACCESSIBLE);
    live_block *live = calloc((size_t)ops, sizeof *live);
    size_t nlive = 0;
    uint64_t corrupt = 0, tag = 0;
    for (int op = 0; op < ops; op++) {
        if (rng_below(&rng, 100) < 52 || nlive == 0) {
            /* With pairs, large blocks up to 8 pages, so that most hold an aligned pair or more. */
            size_t bytes = rng_below(&rng, 2) ? 8 + rng_below(&rng, 8192) : 8 + rng_below(&rng, (pair_min ? 8 : 3) * page);
            bytes &= ~(size_t)7;
            void *p;
            nf_status s = nf_alloc(pool, bytes, NULL, &p);
            CHECK(s == NF_OK || s == NF_ERR_OUT_OF_MEMORY);
            if (s != NF_OK) continue;
            live[nlive] = (live_block){p, bytes / 8, ++tag};
            fill(&live[nlive++]);
        } else {
            size_t i = (size_t)rng_below(&rng, nlive);
            corrupt += corrupt_words(&live[i]);
            CHECK_OK(nf_free(pool, live[i].ptr, NULL));
            live[i] = live[--nlive];
        }
        if (op % 64 == 0) CHECK_OK(nf_pool_check(pool));
    }
    for (size_t i = 0; i < nlive; i++) {
        corrupt += corrupt_words(&live[i]);
        CHECK_OK(nf_free(pool, live[i].ptr, NULL));
    }
    CHECK(corrupt == 0);
    if (corrupt) fprintf(stderr, "seed %llu: %llu corrupt words\n", (unsigned long long)seed, (unsigned long long)corrupt);
    nf_stats st;
    CHECK_OK(nf_stats_get(pool, &st));
    *remaps_out += st.num_remaps;
    CHECK(st.reserved_bytes.peak <= cap_pages * page);
    CHECK(pair_min || st.num_pairs_made == 0);
    pairs_made += st.num_pairs_made;
    test_pool_close(pool, backend);
    free(live);
}

static void run(uint64_t seed, uint64_t gran, uint64_t page_factor, uint64_t cap_pages, bool hold, int ops,
                uint64_t *remaps_out) {
    run_pairs(seed, gran, page_factor, cap_pages, hold, ops, 0, remaps_out);
}

/* A soak over seeds first..last (test_integrity FIRST LAST, not run by CTest; under the
 * sanitizers' build for the most): caps, page sizes, held near live and pairs varying by seed. */
static int soak(uint64_t first, uint64_t last) {
    uint64_t remaps = 0;
    for (uint64_t seed = first; seed <= last; seed++) {
        run(seed, 64 * 1024, 1, 20 + seed % 40, false, 6000, &remaps);
        run(seed + 1000000, 64 * 1024, 1 + 3 * (seed % 2), 40 + seed % 40, seed % 3 == 0, 6000, &remaps);
        run_pairs(seed + 2000000, 64 * 1024, 1, 40 + seed % 60, false, 6000, 2 + seed % 3, &remaps);
        run_pairs(seed + 3000000, 64 * 1024, 1, 4096, true, 6000, 2, &remaps);
    }
    CHECK(remaps > 0);
    printf("seeds %llu-%llu: pages remapped under live data %llu, pairs made %llu\n", (unsigned long long)first,
           (unsigned long long)last, (unsigned long long)remaps, (unsigned long long)pairs_made);
    return check_exit("test_integrity soak");
}

int main(int argc, char **argv) {
    if (argc == 3) return soak(strtoull(argv[1], NULL, 10), strtoull(argv[2], NULL, 10));
    uint64_t remaps = 0;
    for (uint64_t seed = 1; seed <= 6; seed++) run(seed, 64 * 1024, 1, 34, false, 8000, &remaps);
    /* The test is only meaningful if pages really moved under live data. */
    CHECK(remaps > 1000);
    printf("pages remapped under live data: %llu\n", (unsigned long long)remaps);
    /* Pages of 4 granules (256 KiB handles over 64 KiB granules): the same at the same scale. */
    uint64_t large_remaps = 0;
    for (uint64_t seed = 7; seed <= 9; seed++) run(seed, 64 * 1024, 4, 34, false, 8000, &large_remaps);
    CHECK(large_remaps > 300);
    printf("4-granule pages remapped under live data: %llu\n", (unsigned long long)large_remaps);
    /* A cap far above the live peak, as a limit only: pages still move, near the live peak. */
    uint64_t hold_remaps = 0;
    for (uint64_t seed = 10; seed <= 12; seed++) run(seed, 64 * 1024, 1, 4096, true, 8000, &hold_remaps);
    CHECK(hold_remaps > 300);
    printf("pages remapped under live data, loose cap held near live: %llu\n", (unsigned long long)hold_remaps);
    /* Pairs inside blocks of 2 pages or more: pairs and singles moving under live data, a pair
     * claimed through one of its pages, pairs given up for singles under the cap. */
    uint64_t pair_remaps = 0;
    for (uint64_t seed = 13; seed <= 16; seed++) run_pairs(seed, 64 * 1024, 1, 80, false, 8000, 2, &pair_remaps);
    for (uint64_t seed = 17; seed <= 18; seed++) run_pairs(seed, 64 * 1024, 1, 4096, true, 8000, 2, &pair_remaps);
    CHECK(pair_remaps > 300 && pairs_made > 100);
    printf("pages and pairs remapped under live data: %llu (pairs made: %llu)\n", (unsigned long long)pair_remaps,
           (unsigned long long)pairs_made);
    return check_exit("test_integrity");
}
