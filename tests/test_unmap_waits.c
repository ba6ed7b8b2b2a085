/* White-box: what the host waits for before unmapping a virtual page whose physical page now
 * serves another place. It must wait for the work queued through that page (a kernel still using
 * it would fault), and need not wait for the newer work its physical page has gathered elsewhere
 * since, which is often the running step: with a step-mark event (nf_step_mark, once the host has
 * waited at all), such an unmap is settled by a query. Drives the page layer directly on the host
 * backend, whose simulated kernels complete only when the test or a wait completes them. */
#include "check.h"
#include "pages.h"

static const uint64_t G = 64 * 1024;
static void *const S = (void *)(uintptr_t)1; /* the one stream */
static uint64_t completed;                   /* S's kernels completed so far */

static void on_complete(void *user, void *stream, uint64_t done) {
    (void)user;
    if (stream == S && done > completed) completed = done;
}

/* A pool that knows stream S (a block allocated and freed on it: stream index 0, and one idle
 * physical page at virtual page 0, which every acquisition below takes while it is idle). */
static nf_pool *pool_with_stream(nf_backend **be) {
    nf_pool *pool = test_host_pool(G, 3 * G, 64 * G, NULL, be);
    REQUIRE(pool != NULL);
    CHECK_OK(nf_host_set_completion_hook(*be, on_complete, NULL));
    void *p;
    CHECK_OK(nf_alloc(pool, 512, S, &p));
    CHECK_OK(nf_free(pool, p, S));
    REQUIRE(pool->stream_count == 1);
    completed = 0;
    return pool;
}

static void acquire(nf_pool *pool, uint64_t page) {
    bool reused = false;
    CHECK_OK(pages_acquire(pool, pool->base + page * G, G, 0, &reused));
}

static void release(nf_pool *pool, uint64_t page) {
    pages_release(pool, pool->base + page * G, G, 1, ++pool->free_seq); /* freed on stream 0 */
}

int main(void) {
    nf_backend *be;

    /* The work through the page being unmapped is pending: the host waits for it. */
    nf_pool *pool = pool_with_stream(&be);
    acquire(pool, 10);
    CHECK_OK(nf_host_stream_submit(be, S)); /* a kernel using page 10 */
    release(pool, 10);
    acquire(pool, 11); /* the same physical page, now at page 11 (own stream: no wait) */
    CHECK(pool->pages[11].phys == pool->pages[10].phys);
    CHECK(completed == 0);
    acquire(pool, 10); /* page 10's mapping must go: after the kernel that used it */
    CHECK(completed == 1);
    CHECK(pool->stats.calls_event_sync == 1);
    CHECK(pool->pages[10].phys != pool->pages[11].phys);
    release(pool, 10);
    release(pool, 11);
    CHECK_OK(pages_check(pool));
    test_pool_close(pool, be);

    /* The page's own work is done and a step mark says so; its physical page has newer work at
     * another place, still pending: no host wait, and that work stays queued. */
    pool = pool_with_stream(&be);
    pool->marks_steps_with_events = true; /* as once the host has waited */
    acquire(pool, 10);
    release(pool, 10);
    CHECK_OK(nf_step_mark(pool)); /* records S's event: everything before it is page 10's work */
    acquire(pool, 11);
    CHECK_OK(nf_host_stream_submit(be, S)); /* a kernel using page 11: the running step */
    release(pool, 11);
    acquire(pool, 12); /* the same physical page again, at page 12 */
    CHECK(pool->pages[12].phys == pool->pages[10].phys);
    uint64_t syncs = pool->stats.calls_event_sync;
    acquire(pool, 10); /* page 10's mapping goes: its own work is known done by a query */
    CHECK(pool->stats.calls_event_sync == syncs);
    CHECK(completed == 0); /* the step's kernel still queued: nobody waited for it */
    release(pool, 10);
    release(pool, 12);
    CHECK_OK(pages_check(pool));
    CHECK_OK(nf_host_stream_complete(be, S));
    test_pool_close(pool, be);
    return check_exit("test_unmap_waits");
}
