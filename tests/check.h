/* Minimal test support: CHECK records a failure with its location and goes on; tests end with
 * check_exit(), which prints "N passed, N failed" and fails the process on any failure. */
#ifndef NOFRAG_TEST_CHECK_H
#define NOFRAG_TEST_CHECK_H

#include <stdio.h>
#include <stdlib.h>

#include "nofrag.h"
#include "nofrag_backend.h"

static unsigned long check_passed, check_failed;

#define CHECK(cond)                                                                     \
    do {                                                                                \
        if (cond) check_passed++;                                                       \
        else {                                                                          \
            check_failed++;                                                             \
            fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #cond);    \
        }                                                                               \
    } while (0)

#define CHECK_STATUS(expr, expected)                                                    \
    do {                                                                                \
        nf_status check_s_ = (expr);                                                    \
        if (check_s_ == (expected)) check_passed++;                                     \
        else {                                                                          \
            check_failed++;                                                             \
            fprintf(stderr, "%s:%d: %s returned %s, expected %s\n", __FILE__, __LINE__, \
                    #expr, nf_status_str(check_s_), nf_status_str(expected));           \
        }                                                                               \
    } while (0)

#define CHECK_OK(expr) CHECK_STATUS(expr, NF_OK)

/* Stops the test at once: for failures after which nothing further means anything. */
#define REQUIRE(cond)                                                                   \
    do {                                                                                \
        int require_ok_ = (cond) ? 1 : 0;                                               \
        CHECK(require_ok_ && #cond);                                                    \
        if (!require_ok_) {                                                             \
            fprintf(stderr, "stopping\n");                                              \
            exit(1);                                                                    \
        }                                                                               \
    } while (0)

static inline void test_log(void *user, nf_log_level level, const char *message) {
    (void)user;
    if (level <= NF_LOG_ERROR) fprintf(stderr, "  [nofrag] %s\n", message);
}

/* What a test's pool is made of; fields left 0 take the defaults (no cap, the default virtual
 * range, the backend's granularity as page size, test_log). */
typedef struct test_pool_spec {
    bool real_memory;       /* host backend backed by real memory (blocks can be read and written) */
    uint64_t gran;          /* the host backend's granularity */
    uint64_t page_bytes;    /* nf_config.page_bytes */
    uint64_t capacity;      /* nf_config.capacity */
    uint64_t virtual_bytes; /* nf_config.virtual_bytes */
    bool hold_near_live;    /* nf_config.hold_near_live */
    bool reuse_across_streams; /* nf_config.reuse_across_streams */
    uint64_t pair_min_pages;   /* nf_config.pair_min_pages */
    nf_log_fn log;
} test_pool_spec;

/* A pool on a new host backend as the spec says; stops the test if either cannot be made. */
static inline nf_pool *test_pool(const test_pool_spec *spec, nf_backend **backend_out) {
    REQUIRE(nf_backend_host_create(spec->real_memory, spec->gran, backend_out) == NF_OK);
    nf_config cfg = nf_config_default();
    cfg.page_bytes = spec->page_bytes;
    cfg.capacity = spec->capacity;
    cfg.virtual_bytes = spec->virtual_bytes;
    cfg.hold_near_live = spec->hold_near_live;
    cfg.reuse_across_streams = spec->reuse_across_streams;
    cfg.pair_min_pages = spec->pair_min_pages;
    cfg.log = spec->log ? spec->log : test_log;
    nf_pool *pool;
    REQUIRE(nf_pool_create(&cfg, *backend_out, &pool) == NF_OK);
    return pool;
}

/* A pool on the host backend (accounting only) with the given page size, cap (0: none), virtual
 * range and log callback. */
static inline nf_pool *test_host_pool(uint64_t gran, uint64_t capacity, uint64_t virtual_bytes, nf_log_fn log,
                                      nf_backend **backend_out) {
    test_pool_spec spec = {.gran = gran, .capacity = capacity, .virtual_bytes = virtual_bytes, .log = log};
    return test_pool(&spec, backend_out);
}

/* Checks the pool's invariants one last time, destroys the pool, checks that it gave the host
 * backend everything back, and destroys the backend. */
static inline void test_pool_close(nf_pool *pool, nf_backend *backend) {
    CHECK_OK(nf_pool_check(pool));
    CHECK_OK(nf_pool_destroy(pool));
    CHECK(nf_host_all_released(backend));
    nf_backend_destroy(backend);
}

static inline int check_exit(const char *name) {
    printf("%s: %lu passed, %lu failed\n", name, check_passed, check_failed);
    return check_failed ? 1 : 0;
}

/* Deterministic PRNG (splitmix64), so every seed reproduces its sequence. */
static inline uint64_t rng_next(uint64_t *state) {
    uint64_t z = (*state += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static inline uint64_t rng_below(uint64_t *state, uint64_t n) { return rng_next(state) % n; }

#endif
