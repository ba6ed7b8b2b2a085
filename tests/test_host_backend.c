/* The host backend follows CUDA virtual memory's rules for physical allocations of several pages
 * (probed on an H200 by gpu/vmm_cost.cu): a handle is mapped only whole, a mapping is unmapped only
 * whole, and one set-access or one unmap may span several adjacent mappings. In real-memory mode a handle's contents are
 * the same at every place it is mapped. Its simulated events follow CUDA's: an event recorded again
 * covers the newer work, and a stream wait queued before keeps the record it was queued behind. */
#include <string.h>

#include "check.h"

static void rules(bool real) {
    const uint64_t gran = 64 * 1024;
    nf_backend *be;
    REQUIRE(nf_backend_host_create(real, gran, &be) == NF_OK);
    uint64_t base, four, one;
    REQUIRE(be->reserve(be->ctx, 16 * gran, &base) == 0);
    CHECK(be->page_create(be->ctx, 0, &four) != 0);
    REQUIRE(be->page_create(be->ctx, 4, &four) == 0);
    REQUIRE(be->page_create(be->ctx, 1, &one) == 0);

    /* Part of a handle cannot be mapped. */
    CHECK(be->map(be->ctx, base, 3, four) != 0);
    CHECK(be->map(be->ctx, base, 5, four) != 0);
    /* Nor past the end of the reservation. */
    CHECK(be->map(be->ctx, base + 13 * gran, 4, four) != 0);
    CHECK(be->map(be->ctx, base, 4, four) == 0);
    /* No page of the range may be mapped already. */
    CHECK(be->map(be->ctx, base + 3 * gran, 1, one) != 0);
    CHECK(be->map(be->ctx, base + 4 * gran, 1, one) == 0);

    /* Access over both mappings in one call; not over an unmapped page. */
    CHECK(be->set_access(be->ctx, base, 5) == 0);
    CHECK(be->set_access(be->ctx, base, 6) != 0);

    /* Only whole mappings are unmapped, and every page of the range must be mapped. */
    CHECK(be->unmap(be->ctx, base + gran, 1) != 0);
    CHECK(be->unmap(be->ctx, base, 2) != 0);
    CHECK(be->unmap(be->ctx, base + 2 * gran, 3) != 0);
    CHECK(be->unmap(be->ctx, base, 6) != 0);
    /* A mapped handle is not released. */
    CHECK(be->page_release(be->ctx, four) != 0);

    /* The same handle at a second place: in real memory, one set of bytes. */
    CHECK(be->map(be->ctx, base + 8 * gran, 4, four) == 0);
    CHECK(be->set_access(be->ctx, base + 8 * gran, 4) == 0);
    if (real) {
        unsigned char *a = (unsigned char *)(uintptr_t)base, *b = (unsigned char *)(uintptr_t)(base + 8 * gran);
        for (uint64_t i = 0; i < 4 * gran; i += 4096) a[i] = (unsigned char)(i / 4096 + 1);
        int same = 1;
        for (uint64_t i = 0; i < 4 * gran; i += 4096) same &= b[i] == (unsigned char)(i / 4096 + 1);
        CHECK(same);
    }
    /* Two adjacent whole mappings in one call; the handle stays mapped at its second place. */
    CHECK(be->unmap(be->ctx, base, 5) == 0);
    CHECK(be->page_release(be->ctx, four) != 0);
    CHECK(be->set_access(be->ctx, base, 1) != 0);
    CHECK(be->unmap(be->ctx, base + 8 * gran, 4) == 0);
    CHECK(be->page_release(be->ctx, four) == 0);
    CHECK(be->page_release(be->ctx, one) == 0);
    CHECK(be->page_release(be->ctx, one) != 0);

    /* A released slot comes back for a larger handle with room for all of it. */
    uint64_t eight;
    REQUIRE(be->page_create(be->ctx, 8, &eight) == 0);
    CHECK(be->map(be->ctx, base, 8, eight) == 0);
    CHECK(be->set_access(be->ctx, base, 8) == 0);
    if (real) memset((void *)(uintptr_t)base, 0x5a, 8 * gran);
    CHECK(be->unmap(be->ctx, base, 8) == 0);
    CHECK(be->page_release(be->ctx, eight) == 0);
    CHECK(!nf_host_all_released(be)); /* the range is still reserved */
    CHECK(be->unreserve(be->ctx, base, 16 * gran) == 0);
    CHECK(nf_host_all_released(be));
    nf_backend_destroy(be);
}

static void events(void) {
    nf_backend *be;
    REQUIRE(nf_backend_host_create(false, 0, &be) == NF_OK);
    void *S = (void *)1, *T = (void *)2;
    uint64_t ev = 0, again;
    nf_host_stream_submit(be, S);
    REQUIRE(be->event_record(be->ctx, S, &ev) == 0 && ev != 0);
    CHECK(be->event_query(be->ctx, ev) == NF_BACKEND_EVENT_PENDING);
    REQUIRE(be->stream_wait(be->ctx, T, ev) == 0); /* T waits for S's first kernel */
    nf_host_stream_complete(be, S);
    CHECK(be->event_query(be->ctx, ev) == 0);
    nf_host_stream_submit(be, S);
    again = ev;
    REQUIRE(be->event_record(be->ctx, S, &again) == 0);
    CHECK(again == ev);                                           /* the same event, recorded again */
    CHECK(be->event_query(be->ctx, ev) == NF_BACKEND_EVENT_PENDING); /* it covers S's second kernel */
    /* T's wait was for the first record: T's work is not held back by S's second kernel. */
    uint64_t on_t = 0;
    nf_host_stream_submit(be, T);
    REQUIRE(be->event_record(be->ctx, T, &on_t) == 0);
    nf_host_stream_complete(be, T);
    CHECK(be->event_query(be->ctx, on_t) == 0);
    CHECK(be->event_query(be->ctx, ev) == NF_BACKEND_EVENT_PENDING);
    /* A wait queued now is for the second record: T's next kernel completes only after S's. */
    REQUIRE(be->stream_wait(be->ctx, T, ev) == 0);
    nf_host_stream_submit(be, T);
    REQUIRE(be->event_record(be->ctx, T, &on_t) == 0);
    CHECK(be->event_query(be->ctx, on_t) == NF_BACKEND_EVENT_PENDING);
    REQUIRE(be->event_sync(be->ctx, on_t) == 0); /* runs S's kernel first, then T's */
    CHECK(be->event_query(be->ctx, ev) == 0);
    uint64_t released = ev;
    CHECK(be->event_release(be->ctx, ev) == 0);
    CHECK(be->event_record(be->ctx, S, &released) != 0); /* a released event cannot be recorded again */
    CHECK(be->event_release(be->ctx, on_t) == 0);
    nf_backend_destroy(be);
}

/* nf_host_stream_complete_upto: a stream finishes its first N kernels only, in stream order (a
 * wait queued among them runs the stream waited for first), never goes back, and N past what was
 * queued means all of it. */
static void complete_upto(void) {
    nf_backend *be;
    REQUIRE(nf_backend_host_create(false, 0, &be) == NF_OK);
    void *S = (void *)1, *T = (void *)2;
    uint64_t after2 = 0, after3 = 0, on_t = 0, t_first = 0;
    nf_host_stream_submit(be, S);
    nf_host_stream_submit(be, S);
    REQUIRE(be->event_record(be->ctx, S, &after2) == 0);
    nf_host_stream_submit(be, S);
    REQUIRE(be->event_record(be->ctx, S, &after3) == 0);
    CHECK_OK(nf_host_stream_complete_upto(be, S, 1));
    CHECK(be->event_query(be->ctx, after2) == NF_BACKEND_EVENT_PENDING);
    CHECK_OK(nf_host_stream_complete_upto(be, S, 2));
    CHECK(be->event_query(be->ctx, after2) == 0);
    CHECK(be->event_query(be->ctx, after3) == NF_BACKEND_EVENT_PENDING);
    CHECK_OK(nf_host_stream_complete_upto(be, S, 1)); /* finished work stays finished */
    CHECK(be->event_query(be->ctx, after2) == 0);
    /* T: one kernel, then a wait for S's third kernel, then one more kernel. */
    nf_host_stream_submit(be, T);
    REQUIRE(be->event_record(be->ctx, T, &t_first) == 0);
    REQUIRE(be->stream_wait(be->ctx, T, after3) == 0);
    nf_host_stream_submit(be, T);
    REQUIRE(be->event_record(be->ctx, T, &on_t) == 0);
    CHECK_OK(nf_host_stream_complete_upto(be, T, 1)); /* before the wait: S is not run */
    CHECK(be->event_query(be->ctx, t_first) == 0);
    CHECK(be->event_query(be->ctx, after3) == NF_BACKEND_EVENT_PENDING);
    CHECK_OK(nf_host_stream_complete_upto(be, T, 1000)); /* past the wait: S runs to its event */
    CHECK(be->event_query(be->ctx, after3) == 0 && be->event_query(be->ctx, on_t) == 0);
    CHECK_STATUS(nf_host_stream_complete_upto(NULL, S, 1), NF_ERR_INVALID_ARG);
    CHECK(be->event_release(be->ctx, after2) == 0 && be->event_release(be->ctx, after3) == 0);
    CHECK(be->event_release(be->ctx, on_t) == 0 && be->event_release(be->ctx, t_first) == 0);
    nf_backend_destroy(be);
}

int main(void) {
    events();
    complete_upto();
    rules(false);
    rules(true);
    return check_exit("test_host_backend");
}
