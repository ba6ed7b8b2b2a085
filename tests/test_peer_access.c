/* nf_pool_enable_peer_access: the backend's add_peers once, then access granted again on every
 * mapped page (live or idle), one call per run of adjacent mapped pages; a failed grant leaves the
 * pool consistent, and its idle pages get access when a block next claims them. The host backend
 * has no peers, so it is wrapped by a table whose add_peers counts and whose set_access records. */
#include <string.h>

#include "check.h"

enum { GRAN = 64 * 1024, RANGE_PAGES = 64 };

static nf_backend *inner;
static uint64_t base;                  /* the pool's reservation */
static int peers_added;                /* add_peers calls */
static int last_peer = -2;             /* the device of the last add_peers call */
static int grants;                     /* set_access calls */
static unsigned char granted[RANGE_PAGES]; /* pages covered by set_access since the last reset */
static int fail_grant_number;          /* the grants-th call (1-based) to fail; 0: none */

static int w_reserve(void *c, uint64_t bytes, uint64_t *out) {
    int rc = inner->reserve(c, bytes, out);
    if (!rc) base = *out;
    return rc;
}

static int w_add_peers(void *c, int device) {
    (void)c;
    peers_added++;
    last_peer = device;
    return 0;
}

static int w_set_access(void *c, uint64_t va, uint64_t pages) {
    grants++;
    if (grants == fail_grant_number) return 1000; /* the host backend's "precondition broken" */
    for (uint64_t p = (va - base) / GRAN; p < (va - base) / GRAN + pages; p++) granted[p]++;
    return inner->set_access(c, va, pages);
}

static uint64_t page_of(void *ptr) { return ((uint64_t)(uintptr_t)ptr - base) / GRAN; }

static uint64_t mapped_pages(nf_pool *pool) {
    nf_stats st;
    CHECK_OK(nf_stats_get(pool, &st));
    return st.mapped_bytes.current / GRAN;
}

static int granted_pages(void) {
    int n = 0;
    for (int p = 0; p < RANGE_PAGES; p++) n += granted[p] != 0;
    return n;
}

int main(void) {
    /* A backend without add_peers refuses; NULL is a bad argument. */
    nf_backend *plain;
    nf_pool *plain_pool = test_host_pool(GRAN, 0, RANGE_PAGES * GRAN, NULL, &plain);
    CHECK_STATUS(nf_pool_enable_peer_access(plain_pool, -1), NF_ERR_UNSUPPORTED);
    CHECK_STATUS(nf_pool_enable_peer_access(NULL, 1), NF_ERR_INVALID_ARG);
    test_pool_close(plain_pool, plain);

    REQUIRE(nf_backend_host_create(true, GRAN, &inner) == NF_OK);
    nf_backend wrapped = *inner;
    wrapped.reserve = w_reserve;
    wrapped.add_peers = w_add_peers;
    wrapped.set_access = w_set_access;
    nf_config cfg = nf_config_default();
    cfg.virtual_bytes = RANGE_PAGES * GRAN;
    cfg.log = test_log;
    nf_pool *pool;
    REQUIRE(nf_pool_create(&cfg, &wrapped, &pool) == NF_OK);

    /* Pages 0-2 live (a), 3-4 unmapped (b, freed and trimmed), 5-8 live (c), 9 idle (d, freed):
     * two runs of mapped pages, [0, 3) and [5, 10). */
    void *S = (void *)1, *a, *b, *c, *d;
    CHECK_OK(nf_alloc(pool, 3 * GRAN, S, &a));
    CHECK_OK(nf_alloc(pool, 2 * GRAN, S, &b));
    CHECK_OK(nf_alloc(pool, 4 * GRAN, S, &c));
    CHECK_OK(nf_alloc(pool, 1 * GRAN, S, &d));
    REQUIRE(page_of(a) == 0 && page_of(b) == 3 && page_of(c) == 5 && page_of(d) == 9);
    memset(a, 0xa5, 3 * GRAN);
    CHECK_OK(nf_free(pool, b, S));
    CHECK_OK(nf_trim(pool, 0, NULL));
    CHECK_OK(nf_free(pool, d, S));
    CHECK(mapped_pages(pool) == 8);

    grants = 0;
    memset(granted, 0, sizeof granted);
    CHECK_OK(nf_pool_enable_peer_access(pool, 3)); /* one device: the backend hears which */
    CHECK(peers_added == 1 && last_peer == 3);
    CHECK(grants == 2); /* one call per run */
    CHECK(granted_pages() == 8 && granted_pages() == (int)mapped_pages(pool));
    for (int p = 0; p < 10; p++) CHECK(granted[p] == (p < 3 || p >= 5));
    CHECK_OK(nf_pool_check(pool));
    CHECK(((unsigned char *)a)[3 * GRAN - 1] == 0xa5); /* a live block's bytes stay readable */

    /* A failed first run does not stop the second. */
    grants = 0;
    fail_grant_number = 1;
    CHECK_STATUS(nf_pool_enable_peer_access(pool, -1), NF_ERR_BACKEND);
    CHECK(grants == 2);
    CHECK_OK(nf_pool_check(pool));

    /* Again, with the second run's grant failing: an error, every run still tried, the pool
     * consistent; the idle page of the failed run (d's) gets access when a block claims it. */
    grants = 0;
    memset(granted, 0, sizeof granted);
    fail_grant_number = 2;
    CHECK_STATUS(nf_pool_enable_peer_access(pool, -1), NF_ERR_BACKEND);
    fail_grant_number = 0;
    CHECK(peers_added == 3 && grants == 2);
    CHECK(granted[0] == 1 && granted[5] == 0);
    CHECK_OK(nf_pool_check(pool));
    grants = 0;
    memset(granted, 0, sizeof granted);
    void *e;
    CHECK_OK(nf_alloc(pool, 1 * GRAN, S, &e));
    CHECK(page_of(e) == 9); /* d's place, idle and mapped: the placement prefers it */
    CHECK(granted[9] == 1);  /* granted on claim, as the failed run left it */
    memset(e, 0x5a, GRAN);   /* and usable */
    CHECK_OK(nf_pool_check(pool));
    /* c's pages, live through the failure, kept their access: writable. */
    memset(c, 0x11, 4 * GRAN);

    CHECK_OK(nf_free(pool, a, S));
    CHECK_OK(nf_free(pool, c, S));
    CHECK_OK(nf_free(pool, e, S));
    CHECK_OK(nf_pool_check(pool));
    CHECK_OK(nf_pool_destroy(pool));
    CHECK(nf_host_all_released(inner));
    nf_backend_destroy(inner);
    return check_exit("test_peer_access");
}
