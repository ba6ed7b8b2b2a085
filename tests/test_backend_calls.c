/* Every entry of the backend table is called, and the pool's per-primitive counters agree with
 * the calls the backend actually received. The host backend is wrapped by a counting table. */
#include <string.h>

#include "check.h"

typedef struct counts {
    unsigned long reserve, unreserve, page_create, page_release, map, unmap, set_access;
    unsigned long event_record, event_query, event_sync, event_release, error_name;
} counts;

static nf_backend *inner;
static counts seen;

#define WRAP(name, params, args) \
    static int w_##name params { seen.name++; return inner->name args; }
WRAP(reserve, (void *c, uint64_t b, uint64_t *o), (c, b, o))
WRAP(unreserve, (void *c, uint64_t a, uint64_t b), (c, a, b))
WRAP(page_create, (void *c, uint64_t n, uint64_t *h), (c, n, h))
WRAP(page_release, (void *c, uint64_t h), (c, h))
WRAP(map, (void *c, uint64_t va, uint64_t n, uint64_t h), (c, va, n, h))
WRAP(unmap, (void *c, uint64_t va, uint64_t n), (c, va, n))
WRAP(set_access, (void *c, uint64_t va, uint64_t n), (c, va, n))
WRAP(event_record, (void *c, void *s, uint64_t *e), (c, s, e))
WRAP(event_query, (void *c, uint64_t e), (c, e))
WRAP(event_sync, (void *c, uint64_t e), (c, e))
WRAP(event_release, (void *c, uint64_t e), (c, e))
static const char *w_error_name(void *c, int code) {
    seen.error_name++;
    return inner->error_name(c, code);
}

/* A map that fails once, to exercise the error path and error_name. */
static int fail_next_map;
static int w_map_failing(void *c, uint64_t va, uint64_t n, uint64_t h) {
    if (fail_next_map) {
        fail_next_map = 0;
        seen.map++;
        return 1000; /* the host backend's "precondition broken" code */
    }
    return w_map(c, va, n, h);
}

static char last_message[512];
static void keep_log(void *user, nf_log_level level, const char *m) {
    (void)user;
    (void)level;
    snprintf(last_message, sizeof last_message, "%s", m);
}

int main(void) {
    REQUIRE(nf_backend_host_create(false, 64 * 1024, &inner) == NF_OK);
    nf_backend wrapped = *inner;
    wrapped.reserve = w_reserve;
    wrapped.unreserve = w_unreserve;
    wrapped.page_create = w_page_create;
    wrapped.page_release = w_page_release;
    wrapped.map = w_map_failing;
    wrapped.unmap = w_unmap;
    wrapped.set_access = w_set_access;
    wrapped.event_record = w_event_record;
    wrapped.event_query = w_event_query;
    wrapped.event_sync = w_event_sync;
    wrapped.event_release = w_event_release;
    wrapped.error_name = w_error_name;

    nf_config cfg = nf_config_default();
    cfg.capacity = 2 * 64 * 1024;
    cfg.virtual_bytes = 16 * 64 * 1024;
    cfg.log = keep_log;
    nf_pool *pool;
    REQUIRE(nf_pool_create(&cfg, &wrapped, &pool) == NF_OK);
    void *S = (void *)1, *a, *b, *c;
    CHECK_OK(nf_alloc(pool, 64 * 1024, S, &a));
    CHECK_OK(nf_alloc(pool, 64 * 1024, S, &b));
    nf_host_stream_submit(inner, S);
    CHECK_OK(nf_free(pool, a, S));
    /* Forces a remap of a's page after waiting for S: record, query, sync, unmap, map. */
    CHECK_OK(nf_free(pool, b, S));
    CHECK_OK(nf_alloc(pool, 64 * 1024, (void *)2, &a));
    CHECK_OK(nf_alloc(pool, 64 * 1024, (void *)2, &c));
    CHECK_OK(nf_free(pool, a, (void *)2));
    fail_next_map = 1;
    void *d;
    CHECK_OK(nf_free(pool, c, (void *)2));
    CHECK_OK(nf_trim(pool, 0, NULL));
    CHECK_STATUS(nf_alloc(pool, 64 * 1024, S, &d), NF_ERR_BACKEND);
    CHECK(strstr(last_message, "map(") != NULL);
    CHECK_OK(nf_pool_check(pool));
    nf_stats st;
    CHECK_OK(nf_stats_get(pool, &st));
    CHECK_OK(nf_pool_destroy(pool));

    CHECK(st.calls_reserve == seen.reserve);
    CHECK(st.calls_page_create == seen.page_create);
    CHECK(st.calls_map == seen.map);
    CHECK(st.calls_unmap == seen.unmap);
    CHECK(st.calls_set_access == seen.set_access);
    CHECK(st.calls_event_record == seen.event_record);
    CHECK(st.calls_event_query == seen.event_query);
    CHECK(st.calls_event_sync == seen.event_sync);
    const unsigned long *all = &seen.reserve;
    for (size_t i = 0; i < sizeof seen / sizeof seen.reserve; i++) {
        CHECK(all[i] > 0);
        if (!all[i]) fprintf(stderr, "  backend entry %zu never called\n", i);
    }
    CHECK(nf_host_all_released(inner));
    nf_backend_destroy(inner);
    return check_exit("test_backend_calls");
}
