/* Statistics, the walker, trim and capacity changes, on layouts whose figures are known. */
#include <string.h>
#include <time.h>

#include "check.h"

static const uint64_t G = 64 * 1024;

typedef struct walk_sum {
    uint64_t bytes, live_bytes, blocks, live_blocks;
    int stop_after;
} walk_sum;

static int visit(void *user, const nf_block_info *b) {
    walk_sum *w = user;
    w->bytes += b->size;
    w->blocks++;
    if (b->live) {
        w->live_bytes += b->size;
        w->live_blocks++;
    }
    return w->stop_after && (int)w->blocks >= w->stop_after;
}

/* Two adjacent pages whose physical pages are busy through other places lose those mappings in
 * one unmap call: the remap counters count pages, calls_unmap counts calls. */
static void conflict_run_unmapped_in_one_call(void) {
    nf_backend *be;
    nf_pool *pool = test_host_pool(G, 4 * G, 32 * G, test_log, &be);
    void *a, *b, *c, *d;
    CHECK_OK(nf_alloc(pool, 2 * G, NULL, &a)); /* pages 0-1 */
    CHECK_OK(nf_alloc(pool, 512, NULL, &b));   /* page 2 */
    CHECK_OK(nf_free(pool, a, NULL));
    /* Pages 2-5: one new page (the cap's last), then pages 0 and 1's idle physical pages again. */
    CHECK_OK(nf_alloc(pool, 3 * G, NULL, &c));
    nf_stats before, after;
    CHECK_OK(nf_stats_get(pool, &before));
    CHECK(before.num_remaps == 2);
    CHECK_OK(nf_pool_set_capacity(pool, 6 * G));
    /* Fits exactly where a was, but those pages' physical pages now serve c. */
    CHECK_OK(nf_alloc(pool, 2 * G, NULL, &d));
    CHECK(d == a);
    CHECK_OK(nf_pool_check(pool));
    CHECK_OK(nf_stats_get(pool, &after));
    CHECK(after.num_page_unmaps - before.num_page_unmaps == 2);
    CHECK(after.calls_unmap - before.calls_unmap == 1);
    CHECK(after.calls_page_create - before.calls_page_create == 2);
    CHECK(after.calls_set_access - before.calls_set_access == 1);
    CHECK_OK(nf_free(pool, b, NULL));
    CHECK_OK(nf_free(pool, c, NULL));
    CHECK_OK(nf_free(pool, d, NULL));
    test_pool_close(pool, be);
}

/* At the cap, a request that fits no free block at its front still fits at the end of one, where
 * its last page is the live block's after it. */
static void tight_cap_places_at_the_end(void) {
    nf_backend *be;
    nf_pool *pool = test_host_pool(G, 4 * G, 32 * G, test_log, &be);
    char *x, *t, *y, *r;
    CHECK_OK(nf_alloc(pool, G, NULL, (void **)&x));           /* page 0 */
    CHECK_OK(nf_alloc(pool, 5 * G / 2, NULL, (void **)&t));   /* pages 1-3 */
    CHECK_OK(nf_alloc(pool, 512, NULL, (void **)&y));         /* page 3, after t */
    CHECK(t == x + G && y == t + 5 * G / 2);
    CHECK_OK(nf_free(pool, t, NULL));
    /* Pages 1 and 2 are idle; a cap of 3 releases one of them: one page may still become busy. */
    CHECK_OK(nf_pool_set_capacity(pool, 3 * G));
    CHECK_OK(nf_pool_check(pool));
    /* At t's front, 3/2 pages span pages 1 and 2; at its end, pages 2 and 3 (busy through y). */
    CHECK_OK(nf_alloc(pool, 3 * G / 2, NULL, (void **)&r));
    CHECK(r == x + 2 * G);
    CHECK_OK(nf_pool_check(pool));
    nf_stats st;
    CHECK_OK(nf_stats_get(pool, &st));
    CHECK(st.reserved_bytes.current == 3 * G && st.num_alloc_failures == 0);
    /* Nothing is left to make busy: a further page-sized request fails cleanly. */
    void *more;
    CHECK(nf_alloc(pool, G, NULL, &more) == NF_ERR_OUT_OF_MEMORY && more == NULL);
    CHECK_OK(nf_free(pool, r, NULL));
    CHECK_OK(nf_free(pool, x, NULL));
    CHECK_OK(nf_free(pool, y, NULL));
    test_pool_close(pool, be);
}

/* Under a tight budget a request smaller than a page goes to a place whose pages hold live blocks
 * already, passing over the good-fit place on an idle page; without a budget, good fit decides.
 * Layout, in pages: A 0-1.5, hole 1.5-2.75, C 2.75-3.0, hole 3.0-4.0 (page 3 idle), D 4.0-5.0. */
static void tight_budget_fills_busy_pages(void) {
    for (int tight = 0; tight < 2; tight++) {
        nf_backend *be;
        nf_pool *pool = test_host_pool(G, tight ? 5 * G : 0, 32 * G, test_log, &be);
        char *a, *b, *c, *e, *d, *r;
        CHECK_OK(nf_alloc(pool, 3 * G / 2, NULL, (void **)&a));
        CHECK_OK(nf_alloc(pool, 5 * G / 4, NULL, (void **)&b));
        CHECK_OK(nf_alloc(pool, G / 4, NULL, (void **)&c));
        CHECK_OK(nf_alloc(pool, G, NULL, (void **)&e));
        CHECK_OK(nf_alloc(pool, G, NULL, (void **)&d));
        CHECK(e == a + 3 * G && d == a + 4 * G);
        CHECK_OK(nf_free(pool, b, NULL));
        CHECK_OK(nf_free(pool, e, NULL));
        nf_stats before, after;
        CHECK_OK(nf_stats_get(pool, &before));
        CHECK(before.idle_bytes.current == G); /* page 3 */
        CHECK_OK(nf_alloc(pool, G / 4, NULL, (void **)&r));
        CHECK_OK(nf_stats_get(pool, &after));
        if (tight) {
            CHECK(r == a + 3 * G / 2);                      /* on page 1, busy through A */
            CHECK(after.idle_bytes.current == G);           /* page 3 still idle: nothing newly busy */
        } else {
            CHECK(r == a + 3 * G);                          /* good fit: the smaller hole, page 3 */
            CHECK(after.idle_bytes.current == 0);
        }
        CHECK(after.reserved_bytes.current == before.reserved_bytes.current);
        CHECK_OK(nf_pool_check(pool));
        CHECK_OK(nf_free(pool, r, NULL));
        CHECK_OK(nf_free(pool, a, NULL));
        CHECK_OK(nf_free(pool, c, NULL));
        CHECK_OK(nf_free(pool, d, NULL));
        test_pool_close(pool, be);
    }
}

/* Runs the same steps of random blocks (some kept across steps) through `pool`, checking the
 * invariants after every operation; *peak_out receives the live peak (of the last step only with
 * reset_peaks, which resets the statistics' peaks at every step mark, as a user measuring each
 * step's peak would). */
static void random_steps(nf_pool *pool, uint64_t seed, bool reset_peaks, uint64_t *peak_out) {
    enum { SLOTS = 48, STEPS = 40 };
    void *slot[SLOTS] = {0};
    uint64_t rng = seed;
    for (int step = 0; step < STEPS; step++) {
        CHECK_OK(nf_step_mark(pool));
        if (reset_peaks) CHECK_OK(nf_stats_reset_peaks(pool));
        for (int op = 0; op < 64; op++) {
            int i = (int)rng_below(&rng, SLOTS);
            if (slot[i]) {
                CHECK_OK(nf_free(pool, slot[i], NULL));
                slot[i] = NULL;
            } else {
                /* A quarter of a page to six pages; larger at some steps, as when batches grow. */
                uint64_t size = G / 4 + rng_below(&rng, 6 * G) + (step % 7 == 6 ? 3 * G : 0);
                CHECK_OK(nf_alloc(pool, size, NULL, &slot[i]));
            }
            CHECK_OK(nf_pool_check(pool));
        }
    }
    nf_stats st;
    CHECK_OK(nf_stats_get(pool, &st));
    *peak_out = st.allocated_bytes.peak;
    for (int i = 0; i < SLOTS; i++)
        if (slot[i]) CHECK_OK(nf_free(pool, slot[i], NULL));
}

/* hold_near_live under a cap that never binds behaves exactly as no cap (held memory follows the
 * live peak, every figure the same), while the same cap without it fills up with pages, up to 20%
 * above the live peak. */
static void hold_near_live_follows_the_live_peak(void) {
    test_pool_spec specs[3] = {
        {.gran = G, .virtual_bytes = 4096 * G},                                        /* no cap */
        {.gran = G, .capacity = 1024 * G, .virtual_bytes = 4096 * G, .hold_near_live = true},
        {.gran = G, .capacity = 1024 * G, .virtual_bytes = 4096 * G},                  /* fills */
    };
    nf_stats st[3];
    uint64_t live_peak[3];
    for (int k = 0; k < 3; k++) {
        nf_backend *be;
        nf_pool *pool = test_pool(&specs[k], &be);
        random_steps(pool, 99, false, &live_peak[k]);
        CHECK_OK(nf_stats_get(pool, &st[k]));
        test_pool_close(pool, be);
    }
    CHECK(live_peak[0] == live_peak[1] && live_peak[1] == live_peak[2]);
    CHECK(st[1].reserved_bytes.peak == st[0].reserved_bytes.peak);
    CHECK(st[1].num_remaps == st[0].num_remaps && st[1].backend_calls == st[0].backend_calls);
    CHECK(st[1].mapped_bytes.peak == st[0].mapped_bytes.peak);
    /* Held memory near the live peak: 2% growth, plus what busy pages need beyond it. */
    CHECK(st[1].reserved_bytes.peak <= live_peak[1] + live_peak[1] / 10);
    /* Filling the cap holds more and moves fewer pages, */
    CHECK(st[2].reserved_bytes.peak > st[1].reserved_bytes.peak);
    CHECK(st[2].num_remaps < st[1].num_remaps);
    /* but never more than 20% above the live peak (the bound on filling a cap). */
    CHECK(st[2].reserved_bytes.peak <= live_peak[2] + live_peak[2] / 5 + G);
}

/* Resetting the statistics' peaks changes nothing in how the pool behaves: without a cap, under a
 * tight one (placement's sub-page rule and merging depend on the live peak) and under a loose one,
 * the same steps make the same backend calls, remaps and held memory with or without a reset at
 * every step. (Before the pool kept its own live high-water mark, a reset lowered the peak its
 * growth target and tight-budget rules read: it made different backend calls and remaps.) */
static void resetting_peaks_changes_no_behaviour(void) {
    test_pool_spec specs[3] = {
        {.gran = G, .virtual_bytes = 4096 * G},
        {.gran = G, .capacity = 172 * G, .virtual_bytes = 4096 * G}, /* live peak 164 pages */
        {.gran = G, .capacity = 1024 * G, .virtual_bytes = 4096 * G},
    };
    for (int k = 0; k < 3; k++) {
        nf_stats st[2];
        for (int reset = 0; reset < 2; reset++) {
            nf_backend *be;
            nf_pool *pool = test_pool(&specs[k], &be);
            uint64_t peak;
            random_steps(pool, 7, reset, &peak);
            CHECK_OK(nf_stats_get(pool, &st[reset]));
            test_pool_close(pool, be);
        }
        CHECK(st[0].num_allocs == st[1].num_allocs && st[0].num_alloc_failures == st[1].num_alloc_failures);
        CHECK(st[0].backend_calls == st[1].backend_calls);
        CHECK(st[0].num_remaps == st[1].num_remaps && st[0].num_page_maps == st[1].num_page_maps);
        CHECK(st[0].reserved_bytes.current == st[1].reserved_bytes.current);
        CHECK(st[0].reserved_bytes.total == st[1].reserved_bytes.total);
        CHECK(st[1].allocated_bytes.peak < st[0].allocated_bytes.peak); /* the reset did reset */
    }
}

/* A page needed for a new place is taken from idle pages no other stream's work can still touch
 * before one that would make the host wait (an event sync), even when the latter lies nearer. */
static void idle_page_without_pending_work_first(void) {
    test_pool_spec spec = {.gran = G, .capacity = 1024 * G, .virtual_bytes = 4096 * G, .hold_near_live = true};
    nf_backend *be;
    nf_pool *pool = test_pool(&spec, &be);
    void *a = (void *)1, *b = (void *)2; /* streams */
    char *a1, *s1, *a2, *s2, *bb, *s3, *c;
    /* Pages: a1 0-1, s1 2, a2 3-4, s2 5, bb 6-9, s3 10; the s blocks stay live. */
    CHECK_OK(nf_alloc(pool, 2 * G, a, (void **)&a1));
    CHECK_OK(nf_alloc(pool, G, a, (void **)&s1));
    CHECK_OK(nf_alloc(pool, 2 * G, a, (void **)&a2));
    CHECK_OK(nf_alloc(pool, G, a, (void **)&s2));
    CHECK_OK(nf_alloc(pool, 4 * G, b, (void **)&bb));
    CHECK_OK(nf_alloc(pool, G, a, (void **)&s3));
    CHECK(s3 == a1 + 10 * G);
    CHECK_OK(nf_host_stream_submit(be, b)); /* b's work on bb is still running when bb is freed */
    CHECK_OK(nf_free(pool, bb, b));
    CHECK_OK(nf_free(pool, a1, a));
    CHECK_OK(nf_free(pool, a2, a));
    nf_stats before, after;
    CHECK_OK(nf_stats_get(pool, &before));
    /* Three pages fit no free block stream a may use now, so they go above s3 and need three
     * physical pages: a1's and a2's serve without waiting; bb's, nearer, would wait for stream b. */
    CHECK_OK(nf_alloc(pool, 3 * G, a, (void **)&c));
    CHECK(c == a1 + 11 * G);
    CHECK_OK(nf_stats_get(pool, &after));
    CHECK(after.calls_event_sync == before.calls_event_sync);
    CHECK(after.reserved_bytes.current == before.reserved_bytes.current); /* no page was created */
    CHECK_OK(nf_pool_check(pool));
    CHECK_OK(nf_host_stream_complete(be, b));
    CHECK_OK(nf_free(pool, c, a));
    CHECK_OK(nf_free(pool, s1, a));
    CHECK_OK(nf_free(pool, s2, a));
    CHECK_OK(nf_free(pool, s3, a));
    test_pool_close(pool, be);
}

/* The wrapped host backend of backend_time_is_measured: a map takes at least 1 ms, an event sync
 * (a host wait for a stream's work) at least 3 ms, as slow driver calls would. */
enum { SLOW_MAP_NS = 1000000, SLOW_SYNC_NS = 3000000 };
static nf_backend *slow_inner;
static void sleep_ns(long ns) {
    struct timespec t = {0, ns};
    while (nanosleep(&t, &t) != 0) {}
}
static int slow_map(void *c, uint64_t va, uint64_t n, uint64_t h) {
    sleep_ns(SLOW_MAP_NS);
    return slow_inner->map(c, va, n, h);
}
static int slow_event_sync(void *c, uint64_t e) {
    sleep_ns(SLOW_SYNC_NS);
    return slow_inner->event_sync(c, e);
}

/* backend_ns counts the time spent inside backend calls, event_wait_ns the part spent waiting for
 * streams: each at least what the slow calls took, the waits within the total. */
static void backend_time_is_measured(void) {
    REQUIRE(nf_backend_host_create(false, G, &slow_inner) == NF_OK);
    nf_backend slow = *slow_inner;
    slow.map = slow_map;
    slow.event_sync = slow_event_sync;
    nf_config cfg = nf_config_default();
    cfg.capacity = 2 * G;
    cfg.virtual_bytes = 64 * G;
    cfg.log = test_log;
    nf_pool *pool;
    REQUIRE(nf_pool_create(&cfg, &slow, &pool) == NF_OK);
    void *a = (void *)1, *b = (void *)2; /* streams */
    void *x, *y;
    nf_stats st;
    CHECK_OK(nf_alloc(pool, 2 * G, a, &x));
    CHECK_OK(nf_stats_get(pool, &st));
    CHECK(st.calls_map >= 1 && st.backend_ns >= st.calls_map * SLOW_MAP_NS);
    CHECK(st.calls_event_sync == 0 && st.event_wait_ns == 0);
    /* Stream a's work on x is still running when x is freed; under the cap stream b can only have
     * x's pages, after the host waits for that work. */
    CHECK_OK(nf_host_stream_submit(slow_inner, a));
    CHECK_OK(nf_free(pool, x, a));
    CHECK_OK(nf_alloc(pool, 2 * G, b, &y));
    CHECK_OK(nf_stats_get(pool, &st));
    CHECK(st.calls_event_sync >= 1 && st.event_wait_ns >= st.calls_event_sync * SLOW_SYNC_NS);
    CHECK(st.backend_ns >= st.event_wait_ns + st.calls_map * SLOW_MAP_NS);
    char json[8192];
    CHECK_OK(nf_stats_to_json(&st, json, sizeof json, NULL));
    CHECK(strstr(json, "\"backend_ns\":") != NULL && strstr(json, "\"event_wait_ns\":") != NULL);
    CHECK_OK(nf_free(pool, y, b));
    CHECK_OK(nf_pool_check(pool));
    CHECK_OK(nf_pool_destroy(pool));
    CHECK(nf_host_all_released(slow_inner));
    nf_backend_destroy(slow_inner);
}

int main(void) {
    backend_time_is_measured();
    conflict_run_unmapped_in_one_call();
    idle_page_without_pending_work_first();
    tight_cap_places_at_the_end();
    tight_budget_fills_busy_pages();
    hold_near_live_follows_the_live_peak();
    resetting_peaks_changes_no_behaviour();
    nf_backend *be;
    nf_pool *pool = test_host_pool(G, 8 * G, 32 * G, test_log, &be);

    /* Four one-page blocks, then free the 2nd and 4th: 2 pages idle, free mapped = 2 pages,
     * largest free mapped run = 1 page, so fragmentation = 1 - 1/2. */
    void *p[4];
    for (int i = 0; i < 4; i++) CHECK_OK(nf_alloc(pool, G, NULL, &p[i]));
    CHECK_OK(nf_free(pool, p[1], NULL));
    CHECK_OK(nf_free(pool, p[3], NULL));
    nf_stats st;
    CHECK_OK(nf_stats_get(pool, &st));
    CHECK(st.size == sizeof st && st.version == NF_STATS_VERSION);
    CHECK(st.allocated_bytes.current == 2 * G && st.allocated_bytes.peak == 4 * G);
    CHECK(st.allocated_bytes.total == 4 * G);
    CHECK(st.reserved_bytes.current == 4 * G && st.mapped_bytes.current == 4 * G);
    CHECK(st.idle_bytes.current == 2 * G);
    CHECK(st.free_mapped_bytes == 2 * G);
    CHECK(st.largest_free_mapped_bytes == G);
    CHECK(st.fragmentation > 0.49 && st.fragmentation < 0.51);
    CHECK(st.overhead_ratio > 0.99 && st.overhead_ratio < 1.01);
    CHECK(st.virtual_span_bytes.current == 3 * G && st.virtual_span_bytes.peak == 4 * G);
    CHECK(st.capacity_bytes == 8 * G && st.granularity_bytes == G);
    CHECK(st.backend_calls == st.calls_reserve + st.calls_page_create + st.calls_map + st.calls_set_access);

    /* The walker covers the range exactly and can stop early. */
    walk_sum w = {0};
    CHECK_OK(nf_pool_walk(pool, visit, &w));
    CHECK(w.bytes == 32 * G && w.live_bytes == 2 * G && w.live_blocks == 2);
    walk_sum first = {.stop_after = 1};
    CHECK_OK(nf_pool_walk(pool, visit, &first));
    CHECK(first.blocks == 1);

    /* JSON has every field, balanced braces, PyTorch's key names. */
    char json[8192];
    size_t needed;
    CHECK_OK(nf_stats_to_json(&st, json, sizeof json, &needed));
    CHECK(needed == strlen(json));
    CHECK(json[0] == '{' && json[needed - 1] == '}');
    CHECK(strstr(json, "\"allocated_bytes.peak\":262144") != NULL);
    CHECK(strstr(json, "\"reserved_bytes.current\":262144") != NULL);
    CHECK(strstr(json, "\"num_remaps\":0") != NULL);
    CHECK(strstr(json, "\"fragmentation\":0.5") != NULL);
    char small[16];
    CHECK_OK(nf_stats_to_json(&st, small, sizeof small, &needed));
    CHECK(strlen(small) == sizeof small - 1 && needed > sizeof small);

    /* Reset peaks. */
    CHECK_OK(nf_stats_reset_peaks(pool));
    CHECK_OK(nf_stats_get(pool, &st));
    CHECK(st.allocated_bytes.peak == 2 * G && st.allocated_bytes.total == 4 * G);

    /* Trim keeps live pages and releases idle ones down to keep_bytes. */
    uint64_t released;
    CHECK_OK(nf_trim(pool, 3 * G, &released));
    CHECK(released == G);
    CHECK_OK(nf_trim(pool, 0, &released));
    CHECK(released == G);
    CHECK_OK(nf_stats_get(pool, &st));
    CHECK(st.reserved_bytes.current == 2 * G && st.idle_bytes.current == 0);
    CHECK_OK(nf_pool_check(pool));

    /* Lowering the cap below what live blocks hold: allowed, growth stops. */
    CHECK_OK(nf_pool_set_capacity(pool, G));
    CHECK_OK(nf_pool_check(pool));
    void *q;
    CHECK_STATUS(nf_alloc(pool, G, NULL, &q), NF_ERR_OUT_OF_MEMORY);
    CHECK_OK(nf_free(pool, p[0], NULL));
    CHECK_OK(nf_pool_set_capacity(pool, G));
    CHECK_OK(nf_pool_check(pool));
    CHECK_OK(nf_stats_get(pool, &st));
    CHECK(st.reserved_bytes.current == G);
    /* A cap is a budget in whole pages, rounded down: 2.5 pages allow 2, a third page fails, and
     * the stats report the 2 pages. Under one page is refused, the cap left as it was. */
    CHECK_OK(nf_pool_set_capacity(pool, 2 * G + G / 2));
    CHECK_OK(nf_stats_get(pool, &st));
    CHECK(st.capacity_bytes == 2 * G);
    void *r[2];
    CHECK_OK(nf_alloc(pool, G, NULL, &r[0])); /* with p[2]'s page: 2 pages busy */
    CHECK_STATUS(nf_alloc(pool, G, NULL, &r[1]), NF_ERR_OUT_OF_MEMORY);
    nf_stats before;
    CHECK_OK(nf_stats_get(pool, &before));
    CHECK_STATUS(nf_pool_set_capacity(pool, G - 1), NF_ERR_INVALID_ARG);
    CHECK_OK(nf_stats_get(pool, &st));
    CHECK(st.capacity_bytes == 2 * G && st.reserved_bytes.current == before.reserved_bytes.current);
    CHECK(st.reserved_bytes.current <= 2 * G);
    CHECK_OK(nf_free(pool, r[0], NULL));
    CHECK_OK(nf_pool_check(pool));
    CHECK_OK(nf_pool_set_capacity(pool, 0)); /* no cap */
    CHECK_OK(nf_alloc(pool, 10 * G, NULL, &q));
    CHECK_OK(nf_pool_check(pool));

    /* Step marks are counted. */
    CHECK_OK(nf_step_mark(pool));
    CHECK_OK(nf_step_mark(pool));
    CHECK_OK(nf_stats_get(pool, &st));
    CHECK(st.num_steps == 2);
    CHECK(strcmp(nf_version(), NF_VERSION_STRING) == 0);

    test_pool_close(pool, be);
    return check_exit("test_stats");
}
