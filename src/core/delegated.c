/*
 * Pools over a block backend (NF_BACKEND_CAP_PLACES_BLOCKS: CUDA's stream-ordered memory pools):
 * the backend places every block, and the pool keeps what it keeps for its own placement, the
 * books of live blocks, the cap, groups, record_stream, statistics and invariants, so a job can
 * switch between nofrag's placement and CUDA's with the same calls and figures.
 *
 *   held memory   what the backend holds: live blocks and the memory it keeps cached
 *   cap           held memory stays at or below it: after a request the pool gives cached memory
 *                 back when it is over, and fails the request when that is not enough
 *
 * Invariants (nf_pool_check; D for delegated, beside I4, I5, I12 and I13 of pool_internal.h):
 *   D1  reserved_bytes.current == mapped_bytes.current == the backend's holding as last read
 *       (at every request, trim, statistics read and check: the driver may give cached memory
 *       away between them, CUDA's pool did to cuMemAlloc on a full H200, so no equation can
 *       hold it at every moment); idle_bytes.current == max(0, reserved - allocated)
 *   D2  the backend holds at least allocated_bytes.current (read afresh by the check)
 *   D3  capacity != 0  =>  reserved_bytes.current <= capacity + cap_slack * page
 */
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "backend_calls.h"
#include "delegated.h"

static uint64_t round_up(uint64_t x, uint64_t align) { return (x + align - 1) & ~(align - 1); }

static uint64_t cap_bytes(const nf_pool *pool) { return (pool->cap_pages + pool->cap_slack) * pool->gran; }

static void gauge_set(nf_gauge *g, uint64_t value) {
    if (value > g->current) gauge_add(g, value - g->current);
    else gauge_sub(g, g->current - value);
}

/* Sets the books to `held` bytes held by the backend (D1). */
static void books_set_held(nf_pool *pool, uint64_t held) {
    gauge_set(&pool->stats.reserved_bytes, held);
    gauge_set(&pool->stats.mapped_bytes, held);
    uint64_t live = pool->stats.allocated_bytes.current;
    gauge_set(&pool->stats.idle_bytes, held > live ? held - live : 0);
    /* A cap lowered below what was held: the slack shrinks as held memory falls (I11's rule). */
    if (pool->cap_slack && held <= cap_bytes(pool))
        pool->cap_slack = held > pool->cap_pages * pool->gran
                              ? (held - pool->cap_pages * pool->gran + pool->gran - 1) / pool->gran
                              : 0;
}

/* Reads what the backend holds into the books. */
static nf_status held_sync(nf_pool *pool) {
    uint64_t held;
    nf_status s = call_held_bytes(pool, &held);
    if (s == NF_OK) books_set_held(pool, held);
    return s;
}

nf_status delegated_refresh(nf_pool *pool) { return held_sync(pool); }

nf_status delegated_create(nf_pool *pool) {
    const nf_backend *b = pool->backend;
    if (!b->block_alloc || !b->block_free || !b->held_bytes || !b->trim_to || pool->config.reserve_bytes ||
        pool->config.pin_pages)
        return NF_ERR_INVALID_ARG;
    pool->delegated = true;
    if (!ptr_map_init(&pool->live, 1024)) return NF_ERR_NO_MEMORY_HOST;
    return NF_OK;
}

/* Waits for the frees queued on every stream: the backend gives back (or, to other streams, reuses)
 * a freed block only once its stream has reached the free (CUDA's pool does). */
static nf_status frees_reached(nf_pool *pool) {
    for (uint32_t i = 0; i < pool->stream_count; i++) {
        bool done;
        nf_status s = pool_stream_reach(pool, i, pool->free_seq, true, &done);
        if (s != NF_OK) return s;
    }
    return NF_OK;
}

/* Gives back everything cached, once every stream has reached its frees: what a request does
 * before it fails. */
static nf_status make_room(nf_pool *pool) {
    uint64_t released;
    return delegated_trim(pool, pool->stats.allocated_bytes.current, &released);
}

static void report_out_of_memory(nf_pool *pool, uint64_t size, const char *why) {
    pool->stats.num_alloc_failures++;
    pool_log(pool, NF_LOG_WARN, "out of memory: requested %" PRIu64 " bytes (%s); capacity %" PRIu64
             ", live %" PRIu64 ", held by the %s backend %" PRIu64, size, why, pool->cap_pages * pool->gran,
             pool->stats.allocated_bytes.current, pool->backend->name, pool->stats.reserved_bytes.current);
}

nf_status delegated_alloc(nf_pool *pool, uint64_t size, uint32_t idx, uint64_t group, void **ptr_out) {
    uint64_t rounded = round_up(size, pool->config.alignment);
    if (rounded < size || (pool->cap_pages && rounded > pool->cap_pages * pool->gran)) {
        report_out_of_memory(pool, size, "larger than the capacity");
        return NF_ERR_OUT_OF_MEMORY;
    }
    block *b = block_new(pool);
    if (!b) return NF_ERR_NO_MEMORY_HOST;
    void *stream = pool->streams[idx].stream;
    const char *why = "the device is full";
    nf_status s = NF_OK;
    for (int attempt = 0; attempt < 2; attempt++) {
        if (attempt == 1 && (s = make_room(pool)) != NF_OK) break;
        if (pool->cap_pages && pool->stats.allocated_bytes.current + rounded > cap_bytes(pool)) {
            why = "live bytes would pass the capacity";
            s = NF_ERR_OUT_OF_MEMORY;
            break; /* nothing to give back can help */
        }
        uint64_t addr = 0;
        if ((s = call_block_alloc(pool, rounded, stream, &addr)) != NF_OK) {
            /* A request the device refused may still have grown the backend's holding (CUDA's pool
             * did by 288 MiB on an H200 filled to the last GiB): D1 keeps the books true. */
            nf_status read = held_sync(pool);
            if (s == NF_ERR_OUT_OF_MEMORY && read == NF_OK) continue;
            if (s == NF_ERR_OUT_OF_MEMORY) s = read;
            break;
        }
        gauge_add(&pool->stats.allocated_bytes, rounded); /* before held_sync: idle = held - live */
        if (pool->stats.allocated_bytes.current > pool->live_high_water) /* I13 */
            pool->live_high_water = pool->stats.allocated_bytes.current;
        if ((s = held_sync(pool)) == NF_OK && pool->cap_pages && pool->stats.reserved_bytes.current > cap_bytes(pool)) {
            /* Over the cap: give cached memory back; if that is not enough, undo and retry after
             * waiting for every stream (their frees may be what the backend cannot give back). */
            if ((s = call_trim_to(pool, cap_bytes(pool))) == NF_OK) s = held_sync(pool);
            if (s == NF_OK && pool->stats.reserved_bytes.current > cap_bytes(pool)) {
                gauge_sub(&pool->stats.allocated_bytes, rounded);
                if ((s = call_block_free(pool, addr, stream)) == NF_OK) s = held_sync(pool);
                if (s != NF_OK) break;
                why = "the backend's held memory would pass the capacity";
                s = NF_ERR_OUT_OF_MEMORY;
                continue;
            }
        }
        if (s == NF_OK && !ptr_map_put(&pool->live, addr, b)) s = NF_ERR_NO_MEMORY_HOST;
        if (s != NF_OK) { /* the block is the backend's again: nothing of it stays in the books */
            gauge_sub(&pool->stats.allocated_bytes, rounded);
            if (call_block_free(pool, addr, stream) == NF_OK) held_sync(pool);
            break;
        }
        b->addr = addr;
        b->size = rounded;
        b->live = 1;
        b->group = group;
        b->stream_idx = idx;
        b->fence_mask = stream_bit(idx);
        gauge_add(&pool->stats.allocation, 1);
        pool->stats.num_allocs++;
        *ptr_out = (void *)(uintptr_t)addr;
        return NF_OK;
    }
    block_recycle(pool, b);
    if (s == NF_ERR_OUT_OF_MEMORY) report_out_of_memory(pool, rounded, why);
    return s;
}

/* Orders the free of b on stream idx after the work of every other stream it was used on
 * (nf_record_stream): the backend reuses a block once its free's stream gets there, so that
 * stream must first wait for theirs, on the device where the backend can, else on the host. */
static nf_status order_free_after_users(nf_pool *pool, const block *b, uint32_t idx) {
    if (fence_only_own(b->fence_mask, idx) || !(pool->backend->caps & NF_BACKEND_CAP_EVENTS)) return NF_OK;
    bool on_device = (pool->backend->caps & NF_BACKEND_CAP_STREAM_WAIT) && pool->backend->stream_wait;
    for (uint32_t i = 0; i < pool->stream_count; i++) {
        if (i == idx || !(b->fence_mask & stream_bit(i))) continue;
        stream_state *st = &pool->streams[i];
        nf_status s = call_event_record(pool, st->stream, &st->event);
        if (s != NF_OK) return s;
        st->event_seq = pool->free_seq;
        s = on_device ? call_stream_wait(pool, pool->streams[idx].stream, st->event) : call_event_sync(pool, st->event);
        if (s != NF_OK) return s;
    }
    return NF_OK;
}

nf_status delegated_release(nf_pool *pool, block *b, uint32_t idx) {
    nf_status s = order_free_after_users(pool, b, idx);
    if (s == NF_OK) s = call_block_free(pool, b->addr, pool->streams[idx].stream);
    if (s != NF_OK) return s; /* the block stays live: the caller may try again */
    pool->free_seq++; /* the stream has a free pending (make_room waits for it) */
    ptr_map_remove(&pool->live, b->addr);
    gauge_sub(&pool->stats.allocated_bytes, b->size);
    gauge_sub(&pool->stats.allocation, 1);
    block_recycle(pool, b);
    /* A free never raises what the backend holds, and CUDA's pool (release threshold "never")
     * gives nothing back at one: no read here, half of them on a job's calls. The next request,
     * trim, statistics read or check reads it again. */
    books_set_held(pool, pool->stats.reserved_bytes.current);
    return NF_OK;
}

nf_status delegated_trim(nf_pool *pool, uint64_t keep_bytes, uint64_t *released_out) {
    uint64_t before = pool->stats.reserved_bytes.current;
    nf_status s = frees_reached(pool);
    if (s == NF_OK) s = call_trim_to(pool, keep_bytes);
    if (s == NF_OK) s = held_sync(pool);
    *released_out = before > pool->stats.reserved_bytes.current ? before - pool->stats.reserved_bytes.current : 0;
    return s;
}

nf_status delegated_set_capacity(nf_pool *pool, uint64_t cap_pages) {
    pool->cap_pages = cap_pages;
    pool->cap_slack = 0;
    if (!cap_pages || pool->stats.reserved_bytes.current <= cap_bytes(pool)) return NF_OK;
    uint64_t released;
    nf_status s = delegated_trim(pool, cap_bytes(pool), &released);
    uint64_t cap = cap_pages * pool->gran, held = pool->stats.reserved_bytes.current;
    if (held > cap) pool->cap_slack = (held - cap + pool->gran - 1) / pool->gran; /* live or pending */
    return s;
}

nf_status delegated_check(nf_pool *pool) {
    uint64_t live_sum = 0, live_count = 0;
    for (uint64_t i = 0; i < pool->live.capacity; i++) {
        if (!pool->live.keys[i]) continue;
        const block *b = pool->live.values[i];
        INVARIANT(b->live && b->addr == pool->live.keys[i], "I4 map entry 0x%" PRIx64 " is not its live block",
                  pool->live.keys[i]);
        INVARIANT(b->size > 0 && b->size % pool->config.alignment == 0, "I1 size of 0x%" PRIx64, b->addr);
        live_sum += b->size;
        live_count++;
    }
    INVARIANT(live_count == pool->live.count && live_count == pool->stats.allocation.current,
              "I4 %" PRIu64 " live blocks, %" PRIu64 " counted", live_count, pool->stats.allocation.current);
    INVARIANT(live_sum == pool->stats.allocated_bytes.current, "I5 allocated_bytes %" PRIu64 " != %" PRIu64,
              pool->stats.allocated_bytes.current, live_sum);
    const nf_stats *st = &pool->stats;
    uint64_t idle = st->reserved_bytes.current > st->allocated_bytes.current
                        ? st->reserved_bytes.current - st->allocated_bytes.current : 0;
    INVARIANT(st->mapped_bytes.current == st->reserved_bytes.current && st->idle_bytes.current == idle,
              "D1 held %" PRIu64 ", mapped %" PRIu64 ", idle %" PRIu64 ", live %" PRIu64, st->reserved_bytes.current,
              st->mapped_bytes.current, st->idle_bytes.current, st->allocated_bytes.current);
    nf_status s = held_sync(pool);
    if (s != NF_OK) return s;
    uint64_t held = st->reserved_bytes.current;
    INVARIANT(held >= st->allocated_bytes.current, "D2 the backend holds %" PRIu64 " for %" PRIu64 " live", held,
              st->allocated_bytes.current);
    INVARIANT(!pool->cap_pages || held <= cap_bytes(pool), "D3 held %" PRIu64 " over the capacity %" PRIu64, held,
              cap_bytes(pool));
#define NF_X_PEAK(name, desc) INVARIANT(st->name.current <= st->name.peak, "I12 " #name);
    NF_STATS_GAUGES(NF_X_PEAK)
#undef NF_X_PEAK
    INVARIANT(st->allocated_bytes.current <= pool->live_high_water, "I13 allocated_bytes above the high-water mark");
    return NF_OK;
}

/* Live blocks in address order, for the walker. *out is malloc'd (NULL when
 * there are none); false only when host memory runs out. */
static int by_address(const void *a, const void *b) {
    uint64_t x = (*(block *const *)a)->addr, y = (*(block *const *)b)->addr;
    return (x > y) - (x < y);
}

static bool live_blocks_by_address(const nf_pool *pool, block ***out, uint64_t *count_out) {
    *out = NULL;
    *count_out = 0;
    if (!pool->live.count) return true;
    block **list = malloc(pool->live.count * sizeof *list);
    if (!list) return false;
    uint64_t n = 0;
    for (uint64_t i = 0; i < pool->live.capacity; i++)
        if (pool->live.keys[i]) list[n++] = pool->live.values[i];
    qsort(list, n, sizeof *list, by_address);
    *out = list;
    *count_out = n;
    return true;
}

nf_status delegated_walk(nf_pool *pool, nf_walk_fn visitor, void *user) {
    block **list;
    uint64_t n;
    if (!live_blocks_by_address(pool, &list, &n)) return NF_ERR_NO_MEMORY_HOST;
    for (uint64_t i = 0; i < n; i++) {
        const block *b = list[i];
        nf_block_info info = {.address = b->addr, .size = b->size, .live = true, .group = b->group};
        info.stream = b->stream_idx < pool->stream_count ? pool->streams[b->stream_idx].stream : NULL;
        info.pages = info.pages_mapped = (uint32_t)((b->size + pool->gran - 1) / pool->gran);
        if (visitor(user, &info)) break;
    }
    free(list);
    return NF_OK;
}

nf_status delegated_destroy(nf_pool *pool) {
    nf_status first_error = NF_OK;
    for (uint64_t i = 0; i < pool->live.capacity; i++) {
        if (!pool->live.keys[i]) continue;
        const block *b = pool->live.values[i];
        void *stream = b->stream_idx < pool->stream_count ? pool->streams[b->stream_idx].stream : NULL;
        nf_status s = call_block_free(pool, b->addr, stream);
        if (s != NF_OK && first_error == NF_OK) first_error = s;
    }
    return first_error;
}
