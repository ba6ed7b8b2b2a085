/* Driver failures at any point of an allocation or a trim lose nothing and corrupt nothing.
 *
 * A random workload runs under a tight cap on the host backend with real memory (a mapped page
 * stays PROT_NONE until set_access, as on CUDA), on two streams with simulated work pending. A
 * wrapping table makes page_create, map, unmap, set_access, page_release and the event calls fail
 * at random while armed. After every operation: the pool's
 * invariants hold, every live block still holds its bytes, and every new block can be written
 * end to end (a page left mapped without access would fault here). */
#include <string.h>

#include "check.h"

enum { GRAN = 64 * 1024, CAP_PAGES = 12, VIRTUAL_PAGES = 64, MAX_LIVE = 16, OPS = 3000 };

static nf_backend *inner;
static uint64_t rng_state = 42;
static bool armed;
enum { F_CREATE, F_MAP, F_UNMAP, F_ACCESS, F_RELEASE, F_RECORD, F_QUERY, F_SYNC, F_STREAM_WAIT, F_COUNT };
static unsigned long injected[F_COUNT];
static const char *const failure_names[F_COUNT] = {"page_create", "map",          "unmap",       "set_access",
                                                   "page_release", "event_record", "event_query", "event_sync",
                                                   "stream_wait"};

/* One call in eight fails while armed, with the host backend's "precondition broken" code. */
static bool fail_now(int which) {
    if (!armed || rng_next(&rng_state) % 8) return false;
    injected[which]++;
    return true;
}

static int w_page_create(void *c, uint64_t n, uint64_t *h) {
    return fail_now(F_CREATE) ? 1000 : inner->page_create(c, n, h);
}
static int w_map(void *c, uint64_t va, uint64_t n, uint64_t h) {
    return fail_now(F_MAP) ? 1000 : inner->map(c, va, n, h);
}
static int w_unmap(void *c, uint64_t va, uint64_t n) {
    return fail_now(F_UNMAP) ? 1000 : inner->unmap(c, va, n);
}
static int w_set_access(void *c, uint64_t va, uint64_t n) {
    return fail_now(F_ACCESS) ? 1000 : inner->set_access(c, va, n);
}
static int w_page_release(void *c, uint64_t h) {
    return fail_now(F_RELEASE) ? 1000 : inner->page_release(c, h);
}
static int w_event_record(void *c, void *stream, uint64_t *e) {
    return fail_now(F_RECORD) ? 1000 : inner->event_record(c, stream, e);
}
static int w_event_query(void *c, uint64_t e) {
    return fail_now(F_QUERY) ? 1000 : inner->event_query(c, e);
}
static int w_event_sync(void *c, uint64_t e) {
    return fail_now(F_SYNC) ? 1000 : inner->event_sync(c, e);
}
static int w_stream_wait(void *c, void *stream, uint64_t e) {
    return fail_now(F_STREAM_WAIT) ? 1000 : inner->stream_wait(c, stream, e);
}

typedef struct live_block {
    unsigned char *p;
    size_t size;
    unsigned char fill;
    void *stream;
} live_block;

static bool holds(const live_block *b) {
    for (size_t i = 0; i < b->size; i++)
        if (b->p[i] != b->fill) return false;
    return true;
}

/* Failures are expected here, so messages are kept, not printed: the last one explains a broken
 * invariant. */
static char last_message[512];
static void keep_message(void *user, nf_log_level level, const char *m) {
    (void)user;
    (void)level;
    snprintf(last_message, sizeof last_message, "%s", m);
}

/* argv[1], optional: another seed for the workload and the failures; then any of: "hold" to
 * run under nf_config.hold_near_live (the cap then only limits: pages move before it is reached),
 * "across" to run with nf_config.reuse_across_streams (streams wait for each other on the device),
 * "pairs" to back the inside of blocks of 2 pages or more with pairs (nf_config.pair_min_pages). */
int main(int argc, char **argv) {
    if (argc > 1) rng_state = strtoull(argv[1], NULL, 10);
    bool hold = false, across = false, pairs = false;
    for (int i = 2; i < argc; i++) {
        hold |= strcmp(argv[i], "hold") == 0;
        across |= strcmp(argv[i], "across") == 0;
        pairs |= strcmp(argv[i], "pairs") == 0;
        REQUIRE(!strcmp(argv[i], "hold") || !strcmp(argv[i], "across") || !strcmp(argv[i], "pairs"));
    }
    REQUIRE(nf_backend_host_create(true, GRAN, &inner) == NF_OK);
    nf_backend wrapped = *inner;
    wrapped.page_create = w_page_create;
    wrapped.map = w_map;
    wrapped.unmap = w_unmap;
    wrapped.set_access = w_set_access;
    wrapped.page_release = w_page_release;
    wrapped.event_record = w_event_record;
    wrapped.event_query = w_event_query;
    wrapped.event_sync = w_event_sync;
    wrapped.stream_wait = w_stream_wait;

    nf_config cfg = nf_config_default();
    cfg.capacity = CAP_PAGES * GRAN;
    cfg.hold_near_live = hold;
    cfg.reuse_across_streams = across;
    cfg.pair_min_pages = pairs ? 2 : 0;
    cfg.virtual_bytes = VIRTUAL_PAGES * GRAN;
    cfg.log = keep_message;
    nf_pool *pool;
    REQUIRE(nf_pool_create(&cfg, &wrapped, &pool) == NF_OK);
    /* Two streams with simulated work pending, so reusing a block or a page across them asks
     * the backend's events. */
    void *streams[2] = {(void *)1, (void *)2};

    live_block live[MAX_LIVE];
    int n_live = 0;
    unsigned long allocs_ok = 0, allocs_failed = 0, corrupt = 0;
    for (int op = 0; op < OPS; op++) {
        uint64_t r = rng_next(&rng_state) % 100;
        void *stream = streams[rng_next(&rng_state) % 2];
        if (rng_next(&rng_state) % 4 == 0) nf_host_stream_submit(inner, stream);
        if (rng_next(&rng_state) % 8 == 0) nf_host_stream_complete(inner, stream);
        if (r < 55 && n_live < MAX_LIVE) {
            /* 1-6 pages, not a whole number of them, so blocks share pages too. */
            size_t size = (size_t)(rng_next(&rng_state) % (6 * GRAN)) + 1;
            void *p;
            armed = true;
            nf_status s = nf_alloc(pool, size, stream, &p);
            armed = false;
            if (s == NF_OK) {
                live[n_live] = (live_block){p, size, (unsigned char)(op | 1), stream};
                memset(p, live[n_live].fill, size);
                n_live++;
                allocs_ok++;
            } else {
                CHECK(s == NF_ERR_BACKEND || s == NF_ERR_OUT_OF_MEMORY);
                allocs_failed++;
            }
        } else if (r < 95 && n_live) {
            int i = (int)(rng_next(&rng_state) % (uint64_t)n_live);
            CHECK(holds(&live[i]));
            /* Now and then the block was also used on the other stream, or is freed there. */
            void *other = live[i].stream == streams[0] ? streams[1] : streams[0];
            uint64_t how = rng_next(&rng_state) % 8;
            if (how == 0) CHECK_OK(nf_record_stream(pool, live[i].p, other));
            CHECK_OK(nf_free(pool, live[i].p, how == 1 ? other : live[i].stream));
            live[i] = live[--n_live];
        } else if (r < 98) {
            armed = true;
            nf_status s = nf_trim(pool, 0, NULL);
            armed = false;
            CHECK(s == NF_OK || s == NF_ERR_BACKEND);
        } else {
            /* The cap moves between 8 and 16 pages; lowering it trims idle pages. */
            armed = true;
            nf_status s = nf_pool_set_capacity(pool, (8 + rng_next(&rng_state) % 9) * GRAN);
            armed = false;
            CHECK(s == NF_OK || s == NF_ERR_BACKEND);
        }
        /* A broken pool would make the data checks below fault: stop at the first one. */
        if (nf_pool_check(pool) != NF_OK) {
            fprintf(stderr, "operation %d broke the pool: %s\n", op, last_message);
            REQUIRE(!"pool consistent after every operation");
        }
        for (int i = 0; i < n_live; i++)
            if (!holds(&live[i])) corrupt++;
    }
    CHECK(corrupt == 0);
    /* The run exercised both outcomes and every failure point. */
    CHECK(allocs_ok > 100 && allocs_failed > 10);
    nf_stats st;
    CHECK_OK(nf_stats_get(pool, &st));
    CHECK(pairs ? st.num_pairs_made > 50 : st.num_pairs_made == 0);
    printf("allocations: %lu served, %lu failed; injected failures:", allocs_ok, allocs_failed);
    for (int i = 0; i < F_COUNT; i++) printf(" %s %lu", failure_names[i], injected[i]);
    printf("; pairs made %llu\n", (unsigned long long)st.num_pairs_made);
    for (int i = 0; i < F_COUNT; i++) {
        if (i == F_STREAM_WAIT && !across) continue; /* the host waits instead */
        CHECK(injected[i] > 0);
        if (!injected[i]) fprintf(stderr, "  failure point %s never hit\n", failure_names[i]);
    }

    /* Nothing was lost: with failures off, everything frees and every page goes back. */
    for (int i = 0; i < n_live; i++) CHECK_OK(nf_free(pool, live[i].p, live[i].stream));
    nf_host_stream_complete(inner, streams[0]);
    nf_host_stream_complete(inner, streams[1]);
    CHECK_OK(nf_trim(pool, 0, NULL));
    CHECK_OK(nf_pool_check(pool));
    CHECK_OK(nf_pool_destroy(pool));
    CHECK(nf_host_all_released(inner));
    nf_backend_destroy(inner);
    return check_exit("test_backend_failures");
}
