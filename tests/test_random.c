/* Randomized, seeded operation sequences with nf_pool_check after every operation, across caps,
 * granularities, streams, trims, cap changes and step marks, with single pages and with pairs. */
#include <string.h>

#include "check.h"

typedef struct live_block {
    void *ptr;
    size_t size;
    void *stream;
} live_block;

static size_t random_size(uint64_t *rng, uint64_t gran) {
    switch (rng_below(rng, 4)) {
    case 0: return 1 + rng_below(rng, 4096);                 /* small */
    case 1: return 1 + rng_below(rng, gran);                 /* up to a page */
    case 2: return gran * (1 + rng_below(rng, 4)) - rng_below(rng, 2) * 512; /* whole pages */
    default: return 1 + rng_below(rng, 6 * gran);            /* large */
    }
}

/* pair_min: nf_config.pair_min_pages (0: single pages only). */
static void run(uint64_t seed, uint64_t gran, uint64_t cap_pages, int streams, int ops, uint64_t pair_min,
                uint64_t *pairs_made) {
    uint64_t rng = seed;
    nf_backend *backend;
    test_pool_spec spec = {.gran = gran, .capacity = cap_pages * gran, .virtual_bytes = 256 * gran,
                           .pair_min_pages = pair_min};
    nf_pool *pool = test_pool(&spec, &backend);
    live_block *live = calloc((size_t)ops, sizeof *live);
    size_t nlive = 0;
    unsigned long failures = 0;
    for (int op = 0; op < ops; op++) {
        void *stream = (void *)(uintptr_t)rng_below(&rng, (uint64_t)streams);
        uint64_t r = rng_below(&rng, 100);
        if (r < 55 || nlive == 0) {
            size_t size = random_size(&rng, gran);
            void *p;
            nf_status s = nf_alloc(pool, size, stream, &p);
            CHECK(s == NF_OK || s == NF_ERR_OUT_OF_MEMORY);
            if (s == NF_OK) {
                CHECK(p != NULL && (uintptr_t)p % 512 == 0);
                live[nlive++] = (live_block){p, size, stream};
            } else {
                CHECK(p == NULL);
                failures++;
            }
        } else if (r < 97) {
            size_t i = (size_t)rng_below(&rng, nlive);
            /* Free on the allocating stream mostly, sometimes on another one. */
            void *fs = rng_below(&rng, 4) ? live[i].stream : stream;
            CHECK_OK(nf_free(pool, live[i].ptr, fs));
            live[i] = live[--nlive];
            if (rng_below(&rng, 3) == 0) nf_host_stream_submit(backend, fs);
        } else if (r < 98) {
            CHECK_OK(nf_trim(pool, rng_below(&rng, cap_pages + 1) * gran, NULL));
            /* With a cap, sometimes move it within [1, cap_pages] pages and forget the live peak:
             * whether the cap is within 10% of the live peak (free neighbours fenced by different
             * streams merge) then turns on and off, and the invariants must hold either way. */
            if (cap_pages && rng_below(&rng, 2)) {
                CHECK_OK(nf_pool_set_capacity(pool, (1 + rng_below(&rng, cap_pages)) * gran));
                if (rng_below(&rng, 2)) CHECK_OK(nf_stats_reset_peaks(pool));
            }
        } else if (r < 99) {
            CHECK_OK(nf_step_mark(pool));
        } else {
            for (int s = 0; s < streams; s++) nf_host_stream_complete(backend, (void *)(uintptr_t)s);
        }
        nf_status c = nf_pool_check(pool);
        CHECK(c == NF_OK);
        if (c != NF_OK) {
            fprintf(stderr, "seed %llu: check failed after op %d\n", (unsigned long long)seed, op);
            break;
        }
    }
    nf_stats st;
    CHECK_OK(nf_stats_get(pool, &st));
    CHECK(st.allocation.current == nlive);
    CHECK(st.num_alloc_failures == failures);
    if (cap_pages) CHECK(st.reserved_bytes.peak <= cap_pages * gran);
    CHECK(pair_min || st.num_pairs_made == 0);
    *pairs_made += st.num_pairs_made;
    for (size_t i = 0; i < nlive; i++) CHECK_OK(nf_free(pool, live[i].ptr, live[i].stream));
    CHECK_OK(nf_stats_get(pool, &st));
    CHECK(st.allocated_bytes.current == 0 && st.allocation.current == 0);
    test_pool_close(pool, backend);
    free(live);
}

/* A soak over seeds first..last (test_random FIRST LAST, not run by CTest): caps, streams and
 * pairs varying by seed. */
static int soak(uint64_t first, uint64_t last) {
    uint64_t pairs_made = 0;
    for (uint64_t seed = first; seed <= last; seed++) {
        run(seed, 64 * 1024, seed % 2 ? 0 : 30 + seed % 30, 1 + (int)(seed % 4), 4000, 0, &pairs_made);
        run(seed * 7919, 64 * 1024, 30 + seed % 40, 1 + (int)(seed % 4), 4000, 2 + seed % 4, &pairs_made);
        run(seed * 104729, 64 * 1024, 0, 1 + (int)(seed % 3), 4000, 2 + seed % 4, &pairs_made);
    }
    printf("seeds %llu-%llu: pairs made %llu\n", (unsigned long long)first, (unsigned long long)last,
           (unsigned long long)pairs_made);
    return check_exit("test_random soak");
}

int main(int argc, char **argv) {
    if (argc == 3) return soak(strtoull(argv[1], NULL, 10), strtoull(argv[2], NULL, 10));
    const uint64_t gran = 64 * 1024;
    uint64_t pairs_made = 0;
    for (uint64_t seed = 1; seed <= 12; seed++) {
        run(seed, gran, 0, 1, 3000, 0, &pairs_made);          /* no cap, one stream */
        run(seed * 7919, gran, 40, 1, 3000, 0, &pairs_made);  /* tight cap: reclaim and remap */
        run(seed * 104729, gran, 48, 4, 3000, 0, &pairs_made); /* tight cap, four streams */
    }
    run(99, 2ull << 20, 24, 2, 4000, 0, &pairs_made);          /* CUDA's granularity */
    /* Pairs inside blocks of 2 pages or more (random_size's large blocks reach 6 pages): pairs and
     * singles traded under the cap, half-claimed pairs, trims and lowered caps releasing pairs. */
    for (uint64_t seed = 1; seed <= 8; seed++) {
        run(seed * 31, gran, 0, 1, 3000, 2, &pairs_made);
        run(seed * 7927, gran, 40, 1, 3000, 2, &pairs_made);
        run(seed * 104723, gran, 48, 4, 3000, 3, &pairs_made);
    }
    CHECK(pairs_made > 100); /* the runs above are only meaningful if pairs were made */
    printf("pairs made: %llu\n", (unsigned long long)pairs_made);
    return check_exit("test_random");
}
