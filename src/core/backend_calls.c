#include "backend_calls.h"

#include <time.h>

/* The host's monotonic clock, for the time spent inside backend calls: the counts say how many
 * calls a job made, this says what they cost it on the calling thread (docs/cost-model.md has
 * what each kind of call costs on a GPU; this is what they cost here, waits included). */
static uint64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* rc = the backend call `call`, its duration added to the pool's backend_ns. */
#define TIMED(pool, rc, call)                                                                      \
    do {                                                                                           \
        uint64_t start_ns_ = now_ns();                                                             \
        (rc) = (call);                                                                             \
        (pool)->stats.backend_ns += now_ns() - start_ns_;                                          \
    } while (0)

static nf_status failed(nf_pool *pool, const char *call, uint64_t arg, int code) {
    pool_log(pool, NF_LOG_ERROR, "backend %s: %s(0x%llx) failed: %s (%d)", pool->backend->name, call,
             (unsigned long long)arg, pool->backend->error_name(pool->backend->ctx, code), code);
    return NF_ERR_BACKEND;
}

nf_status call_reserve(nf_pool *pool, uint64_t bytes, uint64_t *base_out) {
    pool->stats.calls_reserve++;
    int rc;
    TIMED(pool, rc, pool->backend->reserve(pool->backend->ctx, bytes, base_out));
    return rc ? failed(pool, "reserve", bytes, rc) : NF_OK;
}

nf_status call_unreserve(nf_pool *pool, uint64_t base, uint64_t bytes) {
    pool->stats.calls_unreserve++;
    int rc;
    TIMED(pool, rc, pool->backend->unreserve(pool->backend->ctx, base, bytes));
    return rc ? failed(pool, "unreserve", base, rc) : NF_OK;
}

nf_status call_page_create(nf_pool *pool, uint64_t pages, uint64_t *handle_out) {
    pool->stats.calls_page_create++;
    int rc;
    TIMED(pool, rc, pool->backend->page_create(pool->backend->ctx, pages * pool->backend_pages, handle_out));
    if (rc == NF_BACKEND_OUT_OF_MEMORY) { /* the device is full, not broken: the caller decides */
        pool->stats.num_device_full++;
        return NF_ERR_OUT_OF_MEMORY;
    }
    return rc ? failed(pool, "page_create", pages * pool->gran, rc) : NF_OK;
}

nf_status call_page_release(nf_pool *pool, uint64_t handle) {
    pool->stats.calls_page_release++;
    int rc;
    TIMED(pool, rc, pool->backend->page_release(pool->backend->ctx, handle));
    return rc ? failed(pool, "page_release", handle, rc) : NF_OK;
}

nf_status call_map(nf_pool *pool, uint64_t va, uint64_t pages, uint64_t handle) {
    pool->stats.calls_map++;
    int rc;
    TIMED(pool, rc, pool->backend->map(pool->backend->ctx, va, pages * pool->backend_pages, handle));
    return rc ? failed(pool, "map", va, rc) : NF_OK;
}

nf_status call_unmap(nf_pool *pool, uint64_t va, uint64_t pages) {
    pool->stats.calls_unmap++;
    int rc;
    TIMED(pool, rc, pool->backend->unmap(pool->backend->ctx, va, pages * pool->backend_pages));
    return rc ? failed(pool, "unmap", va, rc) : NF_OK;
}

nf_status call_set_access(nf_pool *pool, uint64_t va, uint64_t pages) {
    pool->stats.calls_set_access++;
    int rc;
    TIMED(pool, rc, pool->backend->set_access(pool->backend->ctx, va, pages * pool->backend_pages));
    return rc ? failed(pool, "set_access", va, rc) : NF_OK;
}

nf_status call_add_peers(nf_pool *pool, int device) {
    int rc;
    TIMED(pool, rc, pool->backend->add_peers(pool->backend->ctx, device));
    return rc ? failed(pool, "add_peers", 0, rc) : NF_OK;
}

nf_status call_event_record(nf_pool *pool, void *stream, uint64_t *event_out) {
    pool->stats.calls_event_record++;
    int rc;
    TIMED(pool, rc, pool->backend->event_record(pool->backend->ctx, stream, event_out));
    return rc ? failed(pool, "event_record", (uint64_t)(uintptr_t)stream, rc) : NF_OK;
}

nf_status call_event_query(nf_pool *pool, uint64_t event, bool *done_out) {
    pool->stats.calls_event_query++;
    int rc;
    TIMED(pool, rc, pool->backend->event_query(pool->backend->ctx, event));
    if (rc == NF_BACKEND_EVENT_PENDING) {
        *done_out = false;
        return NF_OK;
    }
    *done_out = rc == 0;
    return rc ? failed(pool, "event_query", event, rc) : NF_OK;
}

nf_status call_event_sync(nf_pool *pool, uint64_t event) {
    pool->stats.calls_event_sync++;
    pool->stats.num_event_waits++;
    uint64_t before_ns = pool->stats.backend_ns;
    int rc;
    TIMED(pool, rc, pool->backend->event_sync(pool->backend->ctx, event));
    pool->stats.event_wait_ns += pool->stats.backend_ns - before_ns;
    return rc ? failed(pool, "event_sync", event, rc) : NF_OK;
}

nf_status call_stream_wait(nf_pool *pool, void *stream, uint64_t event) {
    pool->stats.calls_stream_wait++;
    int rc;
    TIMED(pool, rc, pool->backend->stream_wait(pool->backend->ctx, stream, event));
    return rc ? failed(pool, "stream_wait", (uint64_t)(uintptr_t)stream, rc) : NF_OK;
}

nf_status call_event_release(nf_pool *pool, uint64_t event) {
    pool->stats.calls_event_release++;
    int rc;
    TIMED(pool, rc, pool->backend->event_release(pool->backend->ctx, event));
    return rc ? failed(pool, "event_release", event, rc) : NF_OK;
}

/* ---- block backends (NF_BACKEND_CAP_PLACES_BLOCKS) ---------------------------------------- */

nf_status call_block_alloc(nf_pool *pool, uint64_t bytes, void *stream, uint64_t *addr_out) {
    pool->stats.calls_block_alloc++;
    int rc;
    TIMED(pool, rc, pool->backend->block_alloc(pool->backend->ctx, bytes, stream, addr_out));
    if (rc == NF_BACKEND_OUT_OF_MEMORY) { /* the device is full: the caller makes room or fails */
        pool->stats.num_device_full++;
        return NF_ERR_OUT_OF_MEMORY;
    }
    return rc ? failed(pool, "block_alloc", bytes, rc) : NF_OK;
}

nf_status call_block_free(nf_pool *pool, uint64_t addr, void *stream) {
    pool->stats.calls_block_free++;
    int rc;
    TIMED(pool, rc, pool->backend->block_free(pool->backend->ctx, addr, stream));
    return rc ? failed(pool, "block_free", addr, rc) : NF_OK;
}

nf_status call_held_bytes(nf_pool *pool, uint64_t *bytes_out) {
    int rc;
    TIMED(pool, rc, pool->backend->held_bytes(pool->backend->ctx, bytes_out));
    return rc ? failed(pool, "held_bytes", 0, rc) : NF_OK;
}

nf_status call_trim_to(nf_pool *pool, uint64_t keep_bytes) {
    pool->stats.calls_trim_to++;
    int rc;
    TIMED(pool, rc, pool->backend->trim_to(pool->backend->ctx, keep_bytes));
    return rc ? failed(pool, "trim_to", keep_bytes, rc) : NF_OK;
}
