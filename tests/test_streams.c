/* The stream rules: a block freed on stream S is reusable at once by S, by another stream only
 * once S's work queued before the free has completed, or (nf_config.reuse_across_streams) at once
 * with the other stream made to wait for that work on the device; a page is unmapped only when no
 * pending work can touch it. The host backend simulates streams: submit queues a kernel, complete
 * finishes it, and a stream that waits completes the waited-for work first. */
#include "check.h"

static void *const S = (void *)0x51, *const T = (void *)0x52;
static const uint64_t GRAN = 64 * 1024;

static nf_pool *make(nf_backend **backend, uint64_t cap_pages) {
    return test_host_pool(GRAN, cap_pages * GRAN, 64 * GRAN, test_log, backend);
}

static void same_stream_reuses_at_once(void) {
    nf_backend *be;
    nf_pool *pool = make(&be, 0);
    void *a, *b;
    CHECK_OK(nf_alloc(pool, 4096, S, &a));
    nf_host_stream_submit(be, S); /* a kernel using a is still running */
    CHECK_OK(nf_free(pool, a, S));
    CHECK_OK(nf_alloc(pool, 4096, S, &b));
    CHECK(a == b); /* stream order makes reuse safe: no event needed */
    nf_stats st;
    CHECK_OK(nf_stats_get(pool, &st));
    CHECK(st.calls_event_record == 0 && st.num_event_waits == 0);
    test_pool_close(pool, be);
}

static void other_stream_waits_for_work(void) {
    nf_backend *be;
    nf_pool *pool = make(&be, 0);
    void *a, *b, *c;
    /* T is known to the pool before S frees. (A pool that has seen one stream only merges freed
     * blocks into fresh space regardless of fences; a stream that shows up later may then wait once
     * for that stream's work.) */
    CHECK_OK(nf_alloc(pool, 512, T, &c));
    CHECK_OK(nf_alloc(pool, 4096, S, &a));
    nf_host_stream_submit(be, S);
    CHECK_OK(nf_free(pool, a, S));
    /* T must not get a while S's kernel may still use it; with no cap it gets fresh memory. */
    CHECK_OK(nf_alloc(pool, 4096, T, &b));
    CHECK(b != a);
    nf_stats st;
    CHECK_OK(nf_stats_get(pool, &st));
    CHECK(st.num_event_waits == 0);
    /* Once S's work completes, a is T's to reuse. */
    nf_host_stream_complete(be, S);
    CHECK_OK(nf_free(pool, b, T));
    nf_host_stream_submit(be, T); /* keeps b fenced for S */
    void *d;
    CHECK_OK(nf_alloc(pool, 4096, T, &d));
    CHECK(d == a || d == b);
    CHECK_OK(nf_free(pool, c, T));
    test_pool_close(pool, be);
}

static void completed_work_needs_no_wait(void) {
    nf_backend *be;
    nf_pool *pool = make(&be, 1);
    void *a, *b;
    CHECK_OK(nf_alloc(pool, GRAN, S, &a));
    nf_host_stream_submit(be, S);
    CHECK_OK(nf_free(pool, a, S));
    nf_host_stream_complete(be, S);
    CHECK_OK(nf_alloc(pool, GRAN, T, &b));
    CHECK(b == a);
    nf_stats st;
    CHECK_OK(nf_stats_get(pool, &st));
    CHECK(st.num_event_waits == 0); /* the query found the work done */
    CHECK(st.calls_event_query >= 1);
    test_pool_close(pool, be);
}

static void page_not_unmapped_under_pending_work(void) {
    nf_backend *be;
    nf_pool *pool = make(&be, 2);
    void *a, *b, *c;
    /* a fills page 0 and frees with a kernel pending; b takes page 1. A request needing a page
     * elsewhere must move page 0, so it has to wait for S's kernel first. */
    CHECK_OK(nf_alloc(pool, GRAN, S, &a));
    CHECK_OK(nf_alloc(pool, GRAN, S, &b));
    nf_host_stream_submit(be, S);
    CHECK_OK(nf_free(pool, a, S));
    nf_stats before;
    CHECK_OK(nf_stats_get(pool, &before));
    CHECK(before.idle_bytes.current == GRAN);
    CHECK_OK(nf_alloc(pool, GRAN, S, &c)); /* reuses page 0 in place: no unmap, no wait */
    CHECK(c == a);
    CHECK_OK(nf_free(pool, c, S));
    nf_host_stream_submit(be, S);
    CHECK_OK(nf_free(pool, b, S));
    /* Now both pages are idle with S's kernel pending. Trimming must wait before unmapping. */
    uint64_t released = 0;
    CHECK_OK(nf_trim(pool, 0, &released));
    CHECK(released == 2 * GRAN);
    nf_stats st;
    CHECK_OK(nf_stats_get(pool, &st));
    CHECK(st.num_event_waits >= 1);
    CHECK(st.reserved_bytes.current == 0);
    test_pool_close(pool, be);
}

static void recorded_stream_fences_the_block(void) {
    nf_backend *be;
    nf_pool *pool = make(&be, 1);
    void *a, *b, *R = (void *)0x53;
    CHECK_OK(nf_alloc(pool, GRAN, S, &a));
    CHECK_OK(nf_record_stream(pool, a, R));
    CHECK_STATUS(nf_record_stream(pool, (char *)a + 512, R), NF_ERR_INVALID_POINTER);
    nf_host_stream_submit(be, R); /* a kernel on R still reads a */
    CHECK_OK(nf_free(pool, a, S));
    /* Even S, the freeing stream, must wait for R: the block is fenced by R's kernel, and the one
     * page under the cap must move from under it to serve the request elsewhere. */
    CHECK_OK(nf_alloc(pool, GRAN, S, &b));
    nf_stats st;
    CHECK_OK(nf_stats_get(pool, &st));
    CHECK(st.num_event_waits == 1);
    test_pool_close(pool, be);
}

static nf_pool *make_across(nf_backend **backend, uint64_t cap_pages) {
    test_pool_spec spec = {.gran = GRAN, .capacity = cap_pages * GRAN, .virtual_bytes = 64 * GRAN,
                           .reuse_across_streams = true};
    return test_pool(&spec, backend);
}

/* Completion order seen by the host backend's hook: which stream finished work, in order. */
static void *completions[8];
static int completion_count;
static void note_completion(void *user, void *stream, uint64_t completed) {
    (void)user;
    (void)completed;
    if (completion_count < 8) completions[completion_count++] = stream;
}

static void across_streams_reuse_waits_on_device(void) {
    nf_backend *be;
    nf_pool *pool = make_across(&be, 0);
    void *a1, *a2, *b1, *b2, *keep;
    CHECK_OK(nf_alloc(pool, 512, T, &keep)); /* T is known before S frees */
    CHECK_OK(nf_alloc(pool, 4 * 4096, S, &a1));
    CHECK_OK(nf_alloc(pool, 4 * 4096, S, &a2));
    nf_host_stream_submit(be, S); /* a kernel on S still uses a1 and a2 */
    CHECK_OK(nf_free(pool, a1, S));
    CHECK_OK(nf_free(pool, a2, S));
    /* T takes the freed memory at once: one device-side wait, no host wait, nothing new mapped. */
    nf_stats before, st;
    CHECK_OK(nf_stats_get(pool, &before));
    CHECK_OK(nf_alloc(pool, 4096, T, &b1));
    CHECK(b1 == a1);
    CHECK_OK(nf_alloc(pool, 4096, T, &b2)); /* T is already ordered after that work: no second wait */
    CHECK((char *)b2 == (char *)a1 + 4096);
    CHECK_OK(nf_stats_get(pool, &st));
    CHECK(st.calls_stream_wait == 1 && st.num_event_waits == 0 && st.calls_event_sync == 0);
    CHECK(st.reserved_bytes.current == before.reserved_bytes.current);
    /* The wait is real: T's next kernel completes only after S's. */
    completion_count = 0;
    nf_host_set_completion_hook(be, note_completion, NULL);
    nf_host_stream_submit(be, T);
    nf_host_stream_complete(be, T);
    CHECK(completion_count == 2 && completions[0] == S && completions[1] == T);
    nf_host_set_completion_hook(be, NULL, NULL);
    CHECK_OK(nf_free(pool, b1, T));
    CHECK_OK(nf_free(pool, b2, T));
    CHECK_OK(nf_free(pool, keep, T));
    test_pool_close(pool, be);
}

/* One page under the cap, fenced by S's pending kernel, and T asks for a page: it waits for S's
 * kernel (the host syncs the event) and gets the page; with reuse across streams it gets the page
 * at once and waits on the device instead. Either way, trimming under pending work waits on the
 * host: an unmap cannot be ordered on a stream. */
static void pending_page_for_other_stream_under_cap(bool across) {
    nf_backend *be;
    nf_pool *pool = across ? make_across(&be, 1) : make(&be, 1);
    void *a, *b;
    CHECK_OK(nf_alloc(pool, GRAN, S, &a));
    nf_host_stream_submit(be, S);
    CHECK_OK(nf_free(pool, a, S));
    CHECK_OK(nf_alloc(pool, GRAN, T, &b));
    CHECK(b == a);
    nf_stats st;
    CHECK_OK(nf_stats_get(pool, &st));
    if (across) {
        CHECK(st.num_event_waits == 0 && st.calls_stream_wait == 1);
    } else {
        CHECK(st.num_event_waits == 1 && st.calls_stream_wait == 0);
        CHECK(st.calls_event_record >= 1 && st.calls_event_query >= 1 && st.calls_event_sync == 1);
    }
    CHECK_OK(nf_free(pool, b, T));
    nf_host_stream_submit(be, T);
    uint64_t waits = st.num_event_waits, released = 0;
    CHECK_OK(nf_trim(pool, 0, &released));
    CHECK(released == GRAN);
    CHECK_OK(nf_stats_get(pool, &st));
    CHECK(st.num_event_waits > waits);
    test_pool_close(pool, be);
}

/* Nearly the whole virtual range freed by S with S's kernel still running, and T busy too: T's
 * request has no place it may take until S's work is done. Asking finds both streams still
 * running, so the pool must wait for S on the host rather than report out of memory (as it did
 * before). Not for T, whose own work comes first on T anyway: one wait. With `others` streams
 * known first and others >= 63, T and S share fence bit 63, T's own work then counts (the pool
 * cannot tell it from S's), and waiting must cover T too: two waits. */
static void other_stream_waits_when_nothing_else_fits(unsigned others) {
    test_pool_spec spec = {.gran = GRAN, .virtual_bytes = 5 * GRAN, .log = test_log};
    nf_backend *be;
    nf_pool *pool = test_pool(&spec, &be);
    void *p, *a, *b, *c;
    uintptr_t base = 0;
    for (uintptr_t i = 0; i < others; i++) {
        CHECK_OK(nf_alloc(pool, 512, (void *)(0x1000 + i), &p));
        if (!base) base = (uintptr_t)p;
        CHECK_OK(nf_free(pool, p, (void *)(0x1000 + i)));
    }
    CHECK_OK(nf_alloc(pool, 512, T, &c));
    if (!base) base = (uintptr_t)c;
    nf_host_stream_submit(be, T); /* T's kernel uses c */
    /* a takes all the rest but half a page: T's request fits nowhere else. */
    uint64_t rest = 5 * GRAN - ((uintptr_t)c + 512 - base);
    CHECK_OK(nf_alloc(pool, rest - GRAN / 2, S, &a));
    nf_host_stream_submit(be, S); /* S's kernel uses a */
    CHECK_OK(nf_free(pool, a, S));
    CHECK_OK(nf_alloc(pool, GRAN, T, &b));
    CHECK(b == a);
    nf_stats st;
    CHECK_OK(nf_stats_get(pool, &st));
    CHECK(st.num_alloc_failures == 0 && st.calls_event_sync == (others >= 63 ? 2u : 1u));
    CHECK_OK(nf_free(pool, b, T));
    CHECK_OK(nf_free(pool, c, T));
    test_pool_close(pool, be);
}

static void fenced_neighbours_merge_once_known_done(void) {
    nf_backend *be;
    nf_pool *pool = make(&be, 0);
    void *a, *b, *c;
    /* a and b fill the first page; each is freed on its own stream with a kernel still queued, so
     * the two free blocks stay apart (each would make the other's stream wait). */
    CHECK_OK(nf_alloc(pool, GRAN / 2, S, &a));
    CHECK_OK(nf_alloc(pool, GRAN / 2, T, &b));
    CHECK((char *)b == (char *)a + GRAN / 2);
    nf_host_stream_submit(be, S);
    nf_host_stream_submit(be, T);
    CHECK_OK(nf_free(pool, a, S));
    CHECK_OK(nf_free(pool, b, T));
    nf_host_stream_complete(be, S);
    nf_host_stream_complete(be, T);
    /* A page-sized request finds no free place but a new page above; before paying for one the
     * pool asks the streams, learns both kernels are done, merges a and b, and takes the page it
     * already holds. */
    CHECK_OK(nf_alloc(pool, GRAN, S, &c));
    CHECK(c == a);
    nf_stats st;
    CHECK_OK(nf_stats_get(pool, &st));
    CHECK(st.reserved_bytes.peak == GRAN && st.calls_event_query >= 1 && st.num_event_waits == 0);
    CHECK_OK(nf_free(pool, c, S));
    test_pool_close(pool, be);
}

static int count_free_blocks(void *user, const nf_block_info *block) {
    if (!block->live) ++*(int *)user;
    return 0;
}

/* Under a tight cap (within 10% of the live peak so far: a budget, or hold_near_live's device
 * limit), free neighbours fenced by different streams merge at once (the merged block keeps both
 * fences); without a cap, or under a loose one, they stay apart while a fence is pending (the case
 * above); setting a tight cap later merges them then. Either way a stream gets the merged block
 * only once both streams' work is known done. */
enum { BUDGET_NONE, BUDGET_TIGHT_AT_START, BUDGET_TIGHT_LATER, BUDGET_LOOSE, DEVICE_LIMIT_TIGHT };
static void fenced_neighbours_merge_under_a_tight_budget(int budget) {
    nf_backend *be;
    /* DEVICE_LIMIT_TIGHT: hold_near_live's cap (the device's limit), which the job nearly fills. */
    bool tight_at_start = budget == BUDGET_TIGHT_AT_START || budget == DEVICE_LIMIT_TIGHT;
    uint64_t cap_pages = tight_at_start ? 4 : budget == BUDGET_LOOSE ? 64 : 0;
    test_pool_spec spec = {.gran = GRAN, .virtual_bytes = 64 * GRAN, .log = test_log,
                           .hold_near_live = budget == DEVICE_LIMIT_TIGHT, .capacity = cap_pages * GRAN};
    nf_pool *pool = test_pool(&spec, &be);
    void *a, *b, *c, *d, *big;
    /* A live peak of 3.75 pages: a 4-page cap is within 10% of it, a 64-page one is not. */
    CHECK_OK(nf_alloc(pool, 4 * GRAN - GRAN / 4, S, &big));
    CHECK_OK(nf_free(pool, big, S));
    CHECK_OK(nf_alloc(pool, GRAN / 2, S, &a));
    CHECK_OK(nf_alloc(pool, GRAN / 2, T, &b));
    CHECK_OK(nf_alloc(pool, GRAN, S, &c)); /* keeps a and b apart from the space above */
    nf_host_stream_submit(be, S);
    nf_host_stream_submit(be, T);
    CHECK_OK(nf_free(pool, a, S));
    CHECK_OK(nf_free(pool, b, T));
    int free_blocks = 0;
    CHECK_OK(nf_pool_walk(pool, count_free_blocks, &free_blocks));
    /* a + b merged or not, and the space above c */
    CHECK(free_blocks == (tight_at_start ? 2 : 3));
    if (budget == BUDGET_TIGHT_LATER) {
        CHECK_OK(nf_pool_set_capacity(pool, 4 * GRAN));
        free_blocks = 0;
        CHECK_OK(nf_pool_walk(pool, count_free_blocks, &free_blocks));
        CHECK(free_blocks == 2);
    }
    CHECK_OK(nf_pool_check(pool));
    /* S's kernel is done, T's is not: S never gets a and b while T's kernel may use b, so it gets
     * its page-sized request after the host waited for T, or elsewhere. */
    nf_host_stream_complete(be, S);
    CHECK_OK(nf_alloc(pool, GRAN, S, &d));
    nf_stats st;
    CHECK_OK(nf_stats_get(pool, &st));
    CHECK(d != a || st.num_event_waits >= 1);
    CHECK_OK(nf_pool_check(pool));
    CHECK_OK(nf_free(pool, d, S));
    CHECK_OK(nf_free(pool, c, S));
    test_pool_close(pool, be);
}

int main(void) {
    fenced_neighbours_merge_under_a_tight_budget(BUDGET_NONE);
    fenced_neighbours_merge_under_a_tight_budget(BUDGET_TIGHT_AT_START);
    fenced_neighbours_merge_under_a_tight_budget(BUDGET_TIGHT_LATER);
    fenced_neighbours_merge_under_a_tight_budget(BUDGET_LOOSE);
    fenced_neighbours_merge_under_a_tight_budget(DEVICE_LIMIT_TIGHT);
    other_stream_waits_when_nothing_else_fits(0);
    other_stream_waits_when_nothing_else_fits(63);
    fenced_neighbours_merge_once_known_done();
    across_streams_reuse_waits_on_device();
    pending_page_for_other_stream_under_cap(false);
    pending_page_for_other_stream_under_cap(true);
    recorded_stream_fences_the_block();
    same_stream_reuses_at_once();
    other_stream_waits_for_work();
    completed_work_needs_no_wait();
    page_not_unmapped_under_pending_work();
    return check_exit("test_streams");
}
