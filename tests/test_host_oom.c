/* Host memory running out: the pool's own bookkeeping (blocks, the address map, physical page
 * slots, stream slots) grows with malloc / calloc / realloc, and every call may fail. This test
 * makes one in N of them fail, only while a pool call runs, and checks that each call then either
 * succeeds or fails cleanly (NF_ERR_NO_MEMORY_HOST, or out of memory under the cap), that the
 * pool's invariants hold after every operation, and that nothing is lost: the live blocks are
 * exactly those allocated and not freed, and everything is released at the end.
 *
 * It replaces malloc, calloc, realloc and free for the whole program (through dlsym(RTLD_NEXT)),
 * so it is left out of sanitizer builds, whose runtimes replace them too. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <dlfcn.h>
#include <string.h>

#include "check.h"

/* ---- the allocator under test's feet -------------------------------------------------------- */

static void *(*real_malloc)(size_t);
static void *(*real_calloc)(size_t, size_t);
static void *(*real_realloc)(void *, size_t);
static void (*real_free)(void *);

/* dlsym itself may call calloc before real_calloc is known: served from here, never freed. */
static _Alignas(16) char bootstrap[8192];
static size_t bootstrap_used;

static int fail_every;          /* 0: never fail; N: fail one call in N while armed */
static unsigned long calls_seen, failures_injected;
static __thread int armed;      /* only the pool call under test sees failures */

static void resolve(void) {
    if (real_malloc) return;
    real_calloc = (void *(*)(size_t, size_t))dlsym(RTLD_NEXT, "calloc");
    real_malloc = (void *(*)(size_t))dlsym(RTLD_NEXT, "malloc");
    real_realloc = (void *(*)(void *, size_t))dlsym(RTLD_NEXT, "realloc");
    real_free = (void (*)(void *))dlsym(RTLD_NEXT, "free");
}

static uint64_t inject_rng = 12345;

/* One call in fail_every fails, at random (a fixed rhythm could line up with the calls one pool
 * operation makes and fail the same one every time). */
static int inject(void) {
    if (!armed || !fail_every) return 0;
    calls_seen++;
    inject_rng = inject_rng * 6364136223846793005ull + 1442695040888963407ull;
    if ((inject_rng >> 33) % (uint64_t)fail_every) return 0;
    failures_injected++;
    return 1;
}

static int from_bootstrap(const void *p) {
    return (const char *)p >= bootstrap && (const char *)p < bootstrap + sizeof bootstrap;
}

void *malloc(size_t n) {
    resolve();
    return inject() ? NULL : real_malloc(n);
}

void *calloc(size_t count, size_t n) {
    if (!real_calloc) {
        static int resolving;
        if (resolving) { /* dlsym asking for memory while we look calloc up */
            size_t bytes = (count * n + 15) & ~(size_t)15;
            if (bootstrap_used + bytes > sizeof bootstrap) return NULL;
            void *p = bootstrap + bootstrap_used;
            bootstrap_used += bytes;
            return p; /* static storage: already zero */
        }
        resolving = 1;
        resolve();
        resolving = 0;
    }
    return inject() ? NULL : real_calloc(count, n);
}

void *realloc(void *p, size_t n) {
    resolve();
    if (from_bootstrap(p)) return NULL; /* never happens: bootstrap memory is dlsym's */
    return inject() ? NULL : real_realloc(p, n);
}

void free(void *p) {
    if (!p || from_bootstrap(p)) return;
    resolve();
    real_free(p);
}

/* ---- the workload ---------------------------------------------------------------------------- */

typedef struct live_block {
    void *ptr;
    void *stream;
} live_block;

/* The host backend allocates too (page handles, events): its failures reach the caller as
 * NF_ERR_BACKEND, a driver call that failed. Out of memory: the cap, or the virtual range full. */
static bool clean_failure(nf_status s) {
    return s == NF_ERR_NO_MEMORY_HOST || s == NF_ERR_BACKEND || s == NF_ERR_OUT_OF_MEMORY;
}

static unsigned long total_host_failures, total_backend_failures, errors_logged;

/* Counts the errors the pool reports instead of printing thousands of them. */
static void count_errors(void *user, nf_log_level level, const char *message) {
    (void)user;
    (void)message;
    if (level <= NF_LOG_ERROR) errors_logged++;
}

/* A pool made while allocations fail is either made whole or not at all. */
static void create_under_failures(void) {
    for (int every = 1; every <= 12; every++) {
        nf_backend *be;
        REQUIRE(nf_backend_host_create(false, 64 * 1024, &be) == NF_OK);
        nf_config cfg = nf_config_default();
        cfg.capacity = 64 * 64 * 1024;
        cfg.log = count_errors;
        nf_pool *pool = NULL;
        fail_every = every;
        armed = 1;
        nf_status s = nf_pool_create(&cfg, be, &pool);
        armed = 0;
        fail_every = 0;
        CHECK(s == NF_OK || s == NF_ERR_NO_MEMORY_HOST || s == NF_ERR_BACKEND);
        CHECK((s == NF_OK) == (pool != NULL));
        if (pool) {
            test_pool_close(pool, be);
        } else {
            CHECK(nf_host_all_released(be)); /* a failed create gives its reservation back */
            nf_backend_destroy(be);
        }
    }
}

static void run(uint64_t seed, int every, uint64_t cap_pages) {
    const uint64_t gran = 64 * 1024;
    uint64_t rng = seed;
    nf_backend *be;
    nf_pool *pool = test_host_pool(gran, cap_pages * gran, 8192 * gran, count_errors, &be);
    enum { OPS = 4000, STREAMS = 6 };
    live_block *live = calloc(OPS, sizeof *live);
    REQUIRE(live != NULL);
    size_t nlive = 0;
    unsigned long host_failures = 0, backend_failures = 0, successes = 0;
    for (int op = 0; op < OPS; op++) {
        /* The first quarter runs without failures, so the pool has bookkeeping to work with even
         * when every later allocation call fails. */
        fail_every = op < OPS / 4 ? 0 : every;
        void *stream = (void *)(uintptr_t)rng_below(&rng, STREAMS);
        uint64_t r = rng_below(&rng, 100);
        nf_status s;
        if (r < 55 || nlive == 0) {
            size_t size = rng_below(&rng, 2) ? 1 + rng_below(&rng, gran) : 1 + rng_below(&rng, 5 * gran);
            void *p = NULL;
            armed = 1;
            s = nf_alloc(pool, size, stream, &p);
            armed = 0;
            CHECK(s == NF_OK || clean_failure(s));
            CHECK((s == NF_OK) == (p != NULL));
            if (s == NF_OK) live[nlive++] = (live_block){p, stream};
        } else if (r < 95) {
            size_t i = (size_t)rng_below(&rng, nlive);
            armed = 1;
            s = nf_free(pool, live[i].ptr, live[i].stream);
            armed = 0;
            CHECK(s == NF_OK || clean_failure(s));
            if (s == NF_OK) live[i] = live[--nlive]; /* a failed free leaves the block live */
            if (rng_below(&rng, 3) == 0) nf_host_stream_submit(be, stream);
        } else if (r < 97) {
            armed = 1;
            s = nf_trim(pool, rng_below(&rng, 8) * gran, NULL);
            armed = 0;
            CHECK(s == NF_OK || clean_failure(s));
        } else if (r < 98) {
            nf_stats st;
            armed = 1;
            s = nf_stats_get(pool, &st);
            armed = 0;
            CHECK(s == NF_OK || s == NF_ERR_NO_MEMORY_HOST);
        } else {
            for (int i = 0; i < STREAMS; i++) nf_host_stream_complete(be, (void *)(uintptr_t)i);
            s = NF_OK;
        }
        if (s == NF_ERR_NO_MEMORY_HOST) host_failures++;
        else if (s == NF_OK) successes++;
        else if (s == NF_ERR_BACKEND) backend_failures++;
        nf_status c = nf_pool_check(pool);
        CHECK(c == NF_OK);
        nf_stats st;
        CHECK_OK(nf_stats_get(pool, &st));
        CHECK(st.allocation.current == nlive);
        if (c != NF_OK || st.allocation.current != nlive) {
            fprintf(stderr, "seed %llu, one in %d: broken after op %d\n", (unsigned long long)seed, every, op);
            break;
        }
    }
    fail_every = 0;
    /* Work still got done between the failures. */
    CHECK(successes > OPS / 4);
    total_host_failures += host_failures;
    total_backend_failures += backend_failures;
    if (getenv("VERBOSE"))
        fprintf(stderr, "one in %d, cap %llu: %lu ok, %lu host, %lu backend\n", every, (unsigned long long)cap_pages,
                successes, host_failures, backend_failures);
    for (size_t i = 0; i < nlive; i++) CHECK_OK(nf_free(pool, live[i].ptr, live[i].stream));
    nf_stats st;
    CHECK_OK(nf_stats_get(pool, &st));
    CHECK(st.allocated_bytes.current == 0 && st.allocation.current == 0);
    test_pool_close(pool, be);
    free(live);
}

int main(void) {
    create_under_failures();
    for (uint64_t seed = 1; seed <= 6; seed++) {
        run(seed, 3, 0);            /* no cap: one allocation call in three fails */
        run(seed * 7919, 3, 48);    /* a tight cap: remaps, reclaims */
        run(seed * 104729, 1, 0);   /* every call fails: the pool can never grow its bookkeeping */
        run(seed * 15485863, 1, 48);
    }
    /* The pool must actually have met the failures, in its own bookkeeping and in the backend's. */
    CHECK(total_host_failures > 50 && total_backend_failures > 10);
    CHECK(errors_logged >= total_backend_failures); /* every failed driver call is reported */
    printf("(%lu allocation calls failed on purpose; %lu operations failed with NF_ERR_NO_MEMORY_HOST, "
           "%lu with NF_ERR_BACKEND)\n", failures_injected, total_host_failures, total_backend_failures);
    return check_exit("test_host_oom");
}
