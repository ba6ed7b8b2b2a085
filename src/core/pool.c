/*
 * The pool: blocks tiling one virtual range, pages mapped on demand under a physical cap, and the
 * stream rules that decide when freed memory may be reused or unmapped.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend_calls.h"
#include "delegated.h"
#include "pages.h"
#include "placement.h"
#include "pool_internal.h"

enum { BLOCKS_PER_SLAB = 1024 };
static const uint64_t DEFAULT_VIRTUAL_NO_CAP = 1ull << 40; /* 1 TiB */
static const uint64_t VIRTUAL_PER_CAPACITY = 4;
static const uint64_t DEFAULT_ALIGNMENT = 512; /* PyTorch's block rounding */

const char *nf_version(void) { return NF_VERSION_STRING; }

nf_config nf_config_default(void) {
    nf_config c;
    memset(&c, 0, sizeof c);
    c.alignment = DEFAULT_ALIGNMENT;
    c.log_level = NF_LOG_WARN;
    return c;
}

void pool_log(nf_pool *pool, nf_log_level level, const char *fmt, ...) {
    if (!pool->config.log || level > pool->config.log_level) return;
    char message[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(message, sizeof message, fmt, ap);
    va_end(ap);
    pool->config.log(pool->config.log_user, level, message);
}


/* ---- block structs ---------------------------------------------------------------------- */

block *block_new(nf_pool *pool) {
    if (!pool->spare_blocks) {
        block_slab *slab = malloc(sizeof *slab + BLOCKS_PER_SLAB * sizeof(block));
        if (!slab) return NULL;
        slab->next = pool->slabs;
        pool->slabs = slab;
        for (int i = 0; i < BLOCKS_PER_SLAB; i++) {
            slab->blocks[i].next = pool->spare_blocks;
            pool->spare_blocks = &slab->blocks[i];
        }
    }
    block *b = pool->spare_blocks;
    pool->spare_blocks = b->next;
    memset(b, 0, sizeof *b);
    return b;
}

void block_recycle(nf_pool *pool, block *b) {
    b->next = pool->spare_blocks;
    pool->spare_blocks = b;
}

/* ---- streams ------------------------------------------------------------------------------ */

static nf_status stream_index(nf_pool *pool, void *stream, uint32_t *idx_out) {
    /* Most calls come from the stream of the previous call. */
    if (pool->stream_count && pool->streams[pool->last_stream].stream == stream) {
        *idx_out = pool->last_stream;
        return NF_OK;
    }
    for (uint32_t i = 0; i < pool->stream_count; i++) {
        if (pool->streams[i].stream == stream) {
            *idx_out = pool->last_stream = i;
            return NF_OK;
        }
    }
    if (pool->stream_count == pool->stream_capacity) {
        uint32_t cap = pool->stream_capacity ? pool->stream_capacity * 2 : 4;
        stream_state *grown = realloc(pool->streams, cap * sizeof *grown);
        if (!grown) return NF_ERR_NO_MEMORY_HOST;
        pool->streams = grown;
        pool->stream_capacity = cap;
    }
    stream_state *st = &pool->streams[pool->stream_count];
    memset(st, 0, sizeof *st);
    st->stream = stream;
    *idx_out = pool->stream_count++;
    return NF_OK;
}

/*
 * Makes sure the work queued on stream `idx` before free number `seq` has completed, as far as
 * can be known without waiting (wait == false) or by waiting (wait == true). *done_out says which.
 *
 * Events are recorded lazily, when a question is asked, not at every free: an event recorded now
 * covers all work queued before every earlier free on that stream, so one event answers for all of
 * them, and a job on one stream never pays for events it does not need.
 */
/* Makes the stream's one event cover the work queued before free number seq: recorded again
 * (created the first time) unless its last record already does. A device-side wait already queued
 * on it keeps the record it was queued behind. */
static nf_status stream_event_cover(nf_pool *pool, stream_state *st, uint64_t seq) {
    if (st->event && st->event_seq >= seq) return NF_OK;
    nf_status s = call_event_record(pool, st->stream, &st->event);
    if (s == NF_OK) st->event_seq = pool->free_seq;
    return s;
}

nf_status pool_stream_reach(nf_pool *pool, uint32_t idx, uint64_t seq, bool wait, bool *done_out) {
    stream_state *st = &pool->streams[idx];
    *done_out = st->done_seq >= seq;
    if (*done_out) return NF_OK;
    if (!(pool->backend->caps & NF_BACKEND_CAP_EVENTS)) {
        st->done_seq = pool->free_seq;
        *done_out = true;
        return NF_OK;
    }
    nf_status s;
    if ((s = stream_event_cover(pool, st, seq)) != NF_OK) return s;
    if ((s = call_event_query(pool, st->event, done_out)) != NF_OK) return s;
    if (!*done_out && wait) {
        if ((s = call_event_sync(pool, st->event)) != NF_OK) return s;
        pool->marks_steps_with_events = true;
        *done_out = true;
    }
    if (*done_out) st->done_seq = st->event_seq;
    return NF_OK;
}

/* Whether memory fenced by `mask` up to free number `seq` may serve stream `idx` (NO_STREAM: be
 * unmapped) as far as is known, with no backend call. A fence naming no stream but idx is idx's
 * own work, which stream order puts first. Otherwise every stream's work queued before that free
 * must be known done, or (idx != NO_STREAM) already ordered before idx's coming work: not only the
 * streams in the mask, since PyTorch code may use a block on another stream without telling the
 * allocator (FSDP's gradients, made on its reduce-scatter stream, are read by the optimizer on the
 * compute stream), relying on PyTorch's own allocator never giving a stream's freed memory to
 * another stream. A stream past 62 shares mask bit 63 with the others past it (fence_only_own
 * never calls a fence its own alone), so its own work is waited for as well. */
bool pool_fence_known_done(const nf_pool *pool, uint64_t mask, uint64_t seq, uint32_t idx) {
    if (fence_only_own(mask, idx)) return true;
    const uint64_t *after = idx < 63 ? pool->streams[idx].ordered_after : NULL;
    for (uint32_t i = 0; i < pool->stream_count; i++) {
        if (i == idx && idx < 63) continue;
        if (pool->streams[i].done_seq < seq && !(after && i < 63 && after[i] >= seq)) return false;
    }
    return true;
}

/* Orders the work that stream idx queues from now on after the work of every stream but idx
 * queued before free number seq, unless mask names no stream but idx (pool_fence_known_done says
 * why every stream). With order_on_device, a stream whose work is still running
 * gets a device-side wait (stream_wait: the host goes on at once); otherwise, or for idx ==
 * NO_STREAM (the pool itself, before unmapping a page), the host waits for that work. */
nf_status pool_order_after(nf_pool *pool, uint64_t mask, uint64_t seq, uint32_t idx) {
    if (fence_only_own(mask, idx)) return NF_OK;
    bool on_device = pool->order_on_device && idx != NO_STREAM;
    for (uint32_t i = 0; i < pool->stream_count; i++) { /* every stream: see pool_fence_known_done */
        if (i == idx) continue;
        if (pool->streams[i].done_seq >= seq) continue;
        if (on_device && idx < 63 && i < 63 && pool->streams[idx].ordered_after[i] >= seq) continue;
        bool done;
        nf_status s = pool_stream_reach(pool, i, seq, !on_device, &done);
        if (s != NF_OK) return s;
        if (done) continue;
        if ((s = call_stream_wait(pool, pool->streams[idx].stream, pool->streams[i].event)) != NF_OK) return s;
        if (idx < 63 && i < 63) pool->streams[idx].ordered_after[i] = pool->streams[i].event_seq;
    }
    return NF_OK;
}

/* Whether a free block may serve stream `idx` now: from what is already known, or at the price
 * of a device-side wait (pool_order_after) when the pool orders streams on the device. */
bool pool_block_usable_by(const nf_pool *pool, const block *b, uint32_t idx) {
    return b->fence_seq == 0 || fence_only_own(b->fence_mask, idx) || pool->order_on_device ||
           pool_fence_known_done(pool, b->fence_mask, b->fence_seq, idx);
}

bool blocks_mergeable(const nf_pool *pool, const block *a, const block *b) {
    /* A free block fenced by some streams does not absorb one fenced by others, nor an unfenced
     * one: the merged block would make other streams wait on the host for memory they could use
     * now, and fresh memory is there for them. Under a tight cap (budget_tight: within 10% of the
     * live peak so far) everything merges, the merged block carrying both fences: a stream that
     * finds only fenced memory then waits for it on the host, where keeping the pieces apart sent
     * its request beyond them onto pages that had to move, spreading the layout until allocations
     * failed (FSDP2 on two H200s at 1.024x its live peak: 2 of 7 runs failed before, out of memory
     * where logged; 0 of 5 after, with more host waits). Under a looser budget merging cost more
     * page moves and host waits than it saved (bench_stream_waits); see docs/placement.md. While
     * the pool has seen a single stream, or orders streams on the device, nobody waits on the host
     * for a fence, so everything merges too. (fence_seq == 0 has fence_mask == 0: equal masks
     * cover two unfenced blocks.) */
    return !a->live && !b->live &&
           (pool->stream_count <= 1 || pool->order_on_device || pool->budget_tight || a->fence_mask == b->fence_mask);
}

static void blocks_merge_known_done(nf_pool *pool);

/* Recomputes budget_tight: a cap within BUDGET_TIGHT_PERCENT of the live peak so far (a budget,
 * or hold_near_live's device limit once the job nearly fills the device). When it turns on,
 * merges the free neighbours that makes mergeable (I2). Called when the cap changes and when the
 * live peak rises. O(1) unless it turns on. */
static void budget_check(nf_pool *pool) {
    bool was_tight = pool->budget_tight;
    pool->budget_tight = pool->cap_pages && pool->cap_pages * pool->gran * 100 <=
                                                pool->live_high_water * (100 + BUDGET_TIGHT_PERCENT);
    if (pool->budget_tight && !was_tight) blocks_merge_known_done(pool);
}

/* The block's fence mask, or 0 when all its streams' work is already known to be done. */
static uint64_t effective_mask(const nf_pool *pool, const block *b) {
    return b->fence_seq && !pool_fence_known_done(pool, b->fence_mask, b->fence_seq, NO_STREAM) ? b->fence_mask : 0;
}

/* Like blocks_mergeable, with fences already known to be done treated as cleared. If so,
 * *seq_out and *mask_out give the merged block's fence. */
static bool blocks_mergeable_now(const nf_pool *pool, const block *a, const block *b,
                                 uint64_t *seq_out, uint64_t *mask_out) {
    if (a->live || b->live) return false;
    uint64_t seq = a->fence_seq > b->fence_seq ? a->fence_seq : b->fence_seq;
    if (blocks_mergeable(pool, a, b)) {
        *seq_out = seq;
        *mask_out = a->fence_mask | b->fence_mask;
        return true;
    }
    uint64_t ma = effective_mask(pool, a), mb = effective_mask(pool, b);
    if (ma != mb) return false;
    *mask_out = ma;
    *seq_out = ma ? seq : 0;
    return true;
}

/* ---- blocks ------------------------------------------------------------------------------- */

/* Splits `size` bytes off the front of free block b (not in the index); the rest goes back to the
 * index as a new free block with b's fence. Returns false only when host memory runs out. */
static bool block_split_front(nf_pool *pool, block *b, uint64_t size) {
    if (b->size == size) return true;
    block *rest = block_new(pool);
    if (!rest) return false;
    rest->addr = b->addr + size;
    rest->size = b->size - size;
    rest->stream_idx = b->stream_idx;
    rest->fence_seq = b->fence_seq;
    rest->fence_mask = b->fence_mask;
    rest->prev = b;
    rest->next = b->next;
    if (b->next) b->next->prev = rest;
    b->next = rest;
    b->size = size;
    index_insert(&pool->index, rest);
    return true;
}

/* Merges free block b with every neighbour it can merge with, repeatedly, since a merge can change
 * the fence and so what the next neighbour may join; b must not be in the index. Returns the merged
 * block (not in the index). */
static block *block_coalesce(nf_pool *pool, block *b) {
    for (;;) {
        uint64_t fence, mask;
        block *n = b->next, *p = b->prev;
        if (n && blocks_mergeable_now(pool, b, n, &fence, &mask)) {
            index_remove(&pool->index, n);
            b->size += n->size;
            b->next = n->next;
            if (n->next) n->next->prev = b;
            block_recycle(pool, n);
        } else if (p && blocks_mergeable_now(pool, p, b, &fence, &mask)) {
            index_remove(&pool->index, p);
            p->size += b->size;
            p->next = b->next;
            if (b->next) b->next->prev = p;
            block_recycle(pool, b);
            b = p;
        } else {
            return b;
        }
        b->fence_seq = fence;
        b->fence_mask = mask;
    }
}

static void virtual_span_after_free(nf_pool *pool, const block *freed) {
    uint64_t end = freed->addr + freed->size - pool->base;
    if (end < pool->stats.virtual_span_bytes.current) return;
    const block *b = freed;
    while (b && !b->live) b = b->prev;
    uint64_t span = b ? b->addr + b->size - pool->base : 0;
    gauge_sub(&pool->stats.virtual_span_bytes, pool->stats.virtual_span_bytes.current - span);
}

static nf_status block_release_live(nf_pool *pool, block *b, uint32_t idx);

/* Splits free block b (not in the index) at `offset`: the front part goes back to the index and
 * the returned block starts at b->addr + offset. NULL only when host memory runs out. */
static block *block_split_at(nf_pool *pool, block *b, uint64_t offset) {
    if (offset == 0) return b;
    if (!block_split_front(pool, b, offset)) return NULL;
    block *rest = b->next; /* block_split_front indexed it */
    index_remove(&pool->index, rest);
    index_insert(&pool->index, b);
    return rest;
}

/* Turns free block b (out of the index, size >= size) into a live block of `size` bytes at its
 * front, mapping the pages it needs. */
static nf_status block_make_live(nf_pool *pool, block *b, uint64_t size, uint32_t idx, bool claimed, uint64_t group) {
    if (!block_split_front(pool, b, size)) {
        if (claimed) pages_claim_undo(pool, b->addr, size);
        index_insert(&pool->index, b);
        return NF_ERR_NO_MEMORY_HOST;
    }
    if (!ptr_map_put(&pool->live, b->addr, b)) {
        if (claimed) pages_claim_undo(pool, b->addr, size);
        index_insert(&pool->index, block_coalesce(pool, b));
        return NF_ERR_NO_MEMORY_HOST;
    }
    b->live = 1;
    b->group = group;
    b->stream_idx = idx;
    b->fence_seq = 0;
    b->fence_mask = stream_bit(idx);
    gauge_add(&pool->stats.allocated_bytes, size);
    if (pool->stats.allocated_bytes.current >= pool->live_high_water) { /* a new peak */
        pool->live_high_water = pool->stats.allocated_bytes.current;
        budget_check(pool);
    }
    gauge_add(&pool->stats.allocation, 1);
    uint64_t end = b->addr + size - pool->base;
    if (end > pool->stats.virtual_span_bytes.current)
        gauge_add(&pool->stats.virtual_span_bytes, end - pool->stats.virtual_span_bytes.current);

    if (claimed) return NF_OK; /* placement claimed the pages in place: nothing was reused */
    bool reclaimed = false;
    nf_status s = pages_acquire(pool, b->addr, size, idx, &reclaimed);
    if (s != NF_OK) {
        /* Undo: releasing the block drops every page's count again; pages mapped so far stay
         * mapped and become idle. */
        block_release_live(pool, b, idx);
        return s;
    }
    if (reclaimed) pool->stats.num_reclaims++;
    return NF_OK;
}

/* Merges every pair of free neighbours that what the pool now knows allows: free blocks fenced
 * differently stay apart while a fence is pending (blocks_mergeable), and merge once both fences
 * are known done or the cap turns tight. Runs when the pool learns either (streams_poll found
 * progress, budget_check). O(blocks). */
static void blocks_merge_known_done(nf_pool *pool) {
    for (block *b = pool->first; b; b = b->next) {
        uint64_t fence, mask;
        if (b->live || !b->next || !blocks_mergeable_now(pool, b, b->next, &fence, &mask)) continue;
        index_remove(&pool->index, b);
        b = block_coalesce(pool, b);
        index_insert(&pool->index, b);
    }
}

/* Returns live block b to the free index as freed on stream idx. */
static nf_status block_release_live(nf_pool *pool, block *b, uint32_t idx) {
    uint64_t seq = ++pool->free_seq;
    uint64_t mask = b->fence_mask | stream_bit(idx); /* every stream the block was used on */
    pages_release(pool, b->addr, b->size, mask, seq);
    ptr_map_remove(&pool->live, b->addr);
    b->live = 0;
    b->stream_idx = idx;
    b->fence_seq = seq;
    b->fence_mask = mask;
    gauge_sub(&pool->stats.allocated_bytes, b->size);
    gauge_sub(&pool->stats.allocation, 1);
    virtual_span_after_free(pool, b);
    index_insert(&pool->index, block_coalesce(pool, b));
    return NF_OK;
}

/* ---- pool lifetime ------------------------------------------------------------------------ */

static uint64_t round_up(uint64_t x, uint64_t align) { return (x + align - 1) & ~(align - 1); }

/* Frees the pool's host bookkeeping (block slabs, pointer map, page tables, streams) and the pool. */
static void pool_free_host_memory(nf_pool *pool) {
    while (pool->slabs) {
        block_slab *next = pool->slabs->next;
        free(pool->slabs);
        pool->slabs = next;
    }
    ptr_map_free(&pool->live);
    pages_free(pool);
    free(pool->streams);
    free(pool);
}

/* A zeroed pool with what every pool has set: its config (alignment resolved), backend, page
 * size and statistics header. NULL when host memory runs out. */
static nf_pool *pool_new(const nf_config *config, nf_backend *backend, uint64_t align, uint64_t gran) {
    nf_pool *pool = calloc(1, sizeof *pool);
    if (!pool) return NULL;
    pool->config = *config;
    pool->config.alignment = align;
    pool->backend = backend;
    pool->gran = gran;
    pool->gran_log2 = (uint32_t)__builtin_ctzll(gran);
    pool->backend_pages = gran / backend->granularity;
    pool->stats.size = sizeof(nf_stats);
    pool->stats.version = NF_STATS_VERSION;
    return pool;
}

/* A pool over a block backend (delegated.c): no range, pages or index; the cap in whole pages of
 * the backend's granularity, as for a page backend. */
static nf_status delegated_pool_create(const nf_config *config, nf_backend *backend, uint64_t align,
                                       nf_pool **pool_out) {
    uint64_t gran = backend->granularity;
    /* The backend places blocks: there are no pages to size or pair. */
    if (align < 256 || (align & (align - 1)) || gran == 0 || (gran & (gran - 1)) || config->page_bytes ||
        config->pair_min_pages || (config->capacity && config->capacity < gran))
        return NF_ERR_INVALID_ARG;
    nf_pool *pool = pool_new(config, backend, align, gran);
    if (!pool) return NF_ERR_NO_MEMORY_HOST;
    pool->cap_pages = config->capacity / gran;
    nf_status s = delegated_create(pool);
    if (s == NF_OK && pthread_mutex_init(&pool->lock, NULL) != 0) s = NF_ERR_NO_MEMORY_HOST;
    if (s != NF_OK) {
        pool_free_host_memory(pool);
        return s;
    }
    *pool_out = pool;
    return NF_OK;
}

nf_status nf_pool_create(const nf_config *config, nf_backend *backend, nf_pool **pool_out) {
    if (!config || !backend || !pool_out) return NF_ERR_INVALID_ARG;
    *pool_out = NULL;
    uint64_t align = config->alignment ? config->alignment : DEFAULT_ALIGNMENT;
    uint64_t unit = backend->granularity;
    if (backend->caps & NF_BACKEND_CAP_PLACES_BLOCKS) return delegated_pool_create(config, backend, align, pool_out);
    uint64_t gran = config->page_bytes ? config->page_bytes : unit;
    if (align < 256 || (align & (align - 1)) || unit == 0 || (unit & (unit - 1)) || (gran & (gran - 1)) ||
        gran % unit || align > gran)
        return NF_ERR_INVALID_ARG;
    /* Whole pages only, rounded down: the cap is a budget the pool must never exceed. */
    uint64_t capacity = config->capacity / gran * gran;
    if (config->capacity && !capacity) return NF_ERR_INVALID_ARG; /* under one page: nothing fits */
    uint64_t virtual_bytes = config->virtual_bytes;
    if (!virtual_bytes)
        virtual_bytes = capacity ? capacity * VIRTUAL_PER_CAPACITY : DEFAULT_VIRTUAL_NO_CAP;
    virtual_bytes = round_up(virtual_bytes, gran);
    if (virtual_bytes < capacity || virtual_bytes / gran > INT32_MAX) return NF_ERR_INVALID_ARG;
    if (config->reserve_bytes > virtual_bytes || (capacity && config->reserve_bytes > capacity) ||
        /* A pinned pool's pages each have their place, so it reserves none, and it never moves a
         * page, which is all that pairs make cheaper. */
        (config->pin_pages && (config->reserve_bytes || config->pair_min_pages)))
        return NF_ERR_INVALID_ARG;

    nf_pool *pool = pool_new(config, backend, align, gran);
    if (!pool) return NF_ERR_NO_MEMORY_HOST;
    pool->virtual_bytes = virtual_bytes;
    pool->cap_pages = capacity / gran;
    pool->page_count = virtual_bytes / gran;
    pool->reserve_pages = round_up(config->reserve_bytes, gran) / gran;
    pool->pairs = config->pair_min_pages != 0;
    pool->order_on_device = config->reuse_across_streams && (backend->caps & NF_BACKEND_CAP_EVENTS) &&
                            (backend->caps & NF_BACKEND_CAP_STREAM_WAIT) && backend->stream_wait;
    block *whole = NULL;
    nf_status s = NF_ERR_NO_MEMORY_HOST;
    if (pages_init(pool) != NF_OK || !ptr_map_init(&pool->live, 1024) || !(whole = block_new(pool)) ||
        pthread_mutex_init(&pool->lock, NULL) != 0)
        goto fail;
    if ((s = call_reserve(pool, virtual_bytes, &pool->base)) != NF_OK) {
        pthread_mutex_destroy(&pool->lock);
        goto fail;
    }
    whole->stream_idx = NO_STREAM;
    whole->addr = pool->base;
    whole->size = virtual_bytes;
    pool->first = whole;
    index_insert(&pool->index, whole);
    if (pool->reserve_pages && (s = pages_make_reserve(pool)) != NF_OK) {
        nf_pool_destroy(pool); /* gives back the pages made so far and the address range */
        return s;
    }
    *pool_out = pool;
    return NF_OK;
fail:
    pool_free_host_memory(pool);
    return s;
}

nf_status nf_pool_destroy(nf_pool *pool) {
    if (!pool) return NF_OK;
    nf_status first_error = NF_OK, s;
#define KEEP_FIRST(expr) \
    if ((s = (expr)) != NF_OK && first_error == NF_OK) first_error = s
    KEEP_FIRST(pool->delegated ? delegated_destroy(pool) : pages_destroy(pool));
    for (uint32_t i = 0; i < pool->stream_count; i++)
        if (pool->streams[i].event) KEEP_FIRST(call_event_release(pool, pool->streams[i].event));
    if (pool->base) KEEP_FIRST(call_unreserve(pool, pool->base, pool->virtual_bytes));
#undef KEEP_FIRST
    pthread_mutex_destroy(&pool->lock);
    pool_free_host_memory(pool);
    return first_error;
}

/* ---- allocation --------------------------------------------------------------------------- */

static uint64_t largest_free_block(const nf_pool *pool) {
    uint64_t largest = 0;
    for (int fl = INDEX_FL_COUNT - 1; fl >= 0 && !largest; fl--) {
        if (!(pool->index.fl_bitmap & (1ull << fl))) continue;
        for (int sl = INDEX_SL_COUNT - 1; sl >= 0; sl--)
            for (const block *b = pool->index.bins[fl][sl]; b; b = b->free_next)
                if (b->size > largest) largest = b->size;
    }
    return largest;
}

static void report_out_of_memory(nf_pool *pool, uint64_t size, const char *why) {
    pool->stats.num_alloc_failures++;
    pool_log(pool, NF_LOG_WARN,
             "out of memory: requested %llu bytes (%s); capacity %llu, live %llu, held %llu, "
             "idle %llu, largest free virtual block %llu",
             (unsigned long long)size, why, (unsigned long long)(pool->cap_pages * pool->gran),
             (unsigned long long)pool->stats.allocated_bytes.current,
             (unsigned long long)pool->stats.reserved_bytes.current,
             (unsigned long long)pool->stats.idle_bytes.current,
             (unsigned long long)largest_free_block(pool));
}

/* Whether stream i has frees whose work is not known done. */
static bool stream_frees_pending(const nf_pool *pool, uint32_t i) {
    return pool->streams[i].done_seq < pool->free_seq;
}

/* Asks the backend about every stream with frees whose completion is not yet known; with
 * wait == true, waits for them, except for stream `requester` (asked only: its own work comes
 * first on it anyway, pool_fence_known_done; but a stream past 62 shares its fence bit with the
 * others past it, so its own work counts and is waited for). *progress says whether anything new
 * was learnt. */
static nf_status streams_poll(nf_pool *pool, bool wait, uint32_t requester, bool *progress) {
    *progress = false;
    if (!(pool->backend->caps & NF_BACKEND_CAP_EVENTS)) return NF_OK;
    for (uint32_t i = 0; i < pool->stream_count; i++) {
        if (!stream_frees_pending(pool, i)) continue;
        stream_state *st = &pool->streams[i];
        uint64_t before = st->done_seq;
        bool done;
        nf_status s = pool_stream_reach(pool, i, pool->free_seq, wait && (i != requester || i >= 63), &done);
        if (s != NF_OK) return s;
        if (st->done_seq != before) *progress = true;
    }
    return NF_OK;
}

/* Whether a stream other than idx has frees whose work is not known done. */
static bool others_pending(const nf_pool *pool, uint32_t idx) {
    for (uint32_t i = 0; i < pool->stream_count; i++)
        if (i != idx && stream_frees_pending(pool, i)) return true;
    return false;
}

/* Whether some run of free neighbours, one of them not yet usable by stream idx, would hold size
 * bytes if merged: only then can learning about other streams make a place appear. O(blocks). */
static bool fenced_run_fits(const nf_pool *pool, uint64_t size, uint32_t idx) {
    uint64_t run = 0;
    bool fenced = false;
    for (const block *b = pool->first; b; b = b->next) {
        if (b->live) {
            run = 0;
            fenced = false;
            continue;
        }
        run += b->size;
        fenced |= !pool_block_usable_by(pool, b, idx);
        if (fenced && run >= size) return true;
    }
    return false;
}

/* streams_poll, then the merges what it learnt allows. */
static nf_status streams_learn(nf_pool *pool, bool wait, uint32_t requester, bool *progress) {
    nf_status s = streams_poll(pool, wait, requester, progress);
    if (s == NF_OK && *progress) blocks_merge_known_done(pool);
    return s;
}

/* One search for a place of `rounded` bytes and the pages under it. NF_ERR_OUT_OF_MEMORY, not
 * reported, when none fits, or when the backend had no memory for a page half-way (the pool is
 * then device_full, and the pages it took are back). Called from one place, so that it is inlined
 * with what it calls: three calls cost the replay 1.8-2.7% more instructions an event (callgrind,
 * bert_mlm_dynpad at 1.02x; block_make_live stopped being inlined). */
static nf_status alloc_placed(nf_pool *pool, uint64_t rounded, uint32_t idx, uint64_t group, void **ptr_out) {
    nf_status s;

    /* Stage 0: what is known to be reusable now; 1: after asking the backend which streams' work
     * has finished (and merging the free blocks that frees); 2: after waiting for it. A stage runs
     * only when the one before found nothing, or, for asking, when stage 0 found only a place
     * whose pages must be mapped while other streams have frees not known done: the pool learns
     * lazily, and a query costs far less than a map (a two-stream FSDP trace held 1.035x without
     * a cap and moved 76 pages a step without this question; its streams merged into one, 1.011x
     * and 1.3). Asking that learns nothing new leads to waiting, never straight to failure: the
     * work may simply still be running (test_streams: other_stream_waits_when_nothing_else_fits). */
    bool asked = false;
    for (int stage = 0;;) {
        uint64_t offset = 0;
        bool claimed;
        block *b = placement_find(pool, rounded, idx, &offset, &claimed);
        if (b && !claimed && stage == 0 && others_pending(pool, idx) && fenced_run_fits(pool, rounded, idx)) {
            bool progress;
            asked = true;
            if ((s = streams_learn(pool, false, idx, &progress)) != NF_OK) return s;
            if (progress) b = placement_find(pool, rounded, idx, &offset, &claimed);
        }
        if (b) {
            /* Work other streams queued before the block's free must come first (a no-op unless
             * the pool orders streams on the device: placement took only blocks known free). */
            if (b->fence_seq && !fence_only_own(b->fence_mask, idx) &&
                (s = pool_order_after(pool, b->fence_mask, b->fence_seq, idx)) != NF_OK) {
                if (claimed) pages_claim_undo(pool, b->addr + offset, rounded);
                return s;
            }
            index_remove(&pool->index, b);
            block *front = b;
            if (!(b = block_split_at(pool, b, offset))) { /* offset > 0: never claimed */
                index_insert(&pool->index, front);
                return NF_ERR_NO_MEMORY_HOST;
            }
            s = block_make_live(pool, b, rounded, idx, claimed, group);
            if (s != NF_OK) return s;
            pool->stats.num_allocs++;
            *ptr_out = (void *)(uintptr_t)b->addr;
            return NF_OK;
        }
        if (stage == 2) break;
        bool progress;
        if (stage == 0 && !asked) {
            stage = 1;
            if ((s = streams_learn(pool, false, idx, &progress)) != NF_OK) return s;
            if (progress) continue; /* place again with what was learnt */
        }
        stage = 2;
        if ((s = streams_learn(pool, true, idx, &progress)) != NF_OK) return s;
        if (!progress) break;
    }
    return NF_ERR_OUT_OF_MEMORY;
}

static nf_status alloc_locked(nf_pool *pool, size_t size, void *stream, uint64_t group, void **ptr_out) {
    uint32_t idx;
    nf_status s = stream_index(pool, stream, &idx);
    if (s != NF_OK) return s;
    if (pool->delegated) return delegated_alloc(pool, size, idx, group, ptr_out);
    uint64_t align = pool->config.alignment;
    if ((uint64_t)size > UINT64_MAX - align || round_up(size, align) > pool->virtual_bytes ||
        (pool->cap_pages && round_up(size, align) > pool->cap_pages * pool->gran)) {
        report_out_of_memory(pool, size, "larger than the capacity");
        return NF_ERR_OUT_OF_MEMORY;
    }
    uint64_t rounded = round_up(size, align);
    bool full_before = pool->device_full;
    for (int attempt = 0;; attempt++) {
        s = alloc_placed(pool, rounded, idx, group, ptr_out);
        if (s != NF_ERR_OUT_OF_MEMORY || attempt == 1) break;
        if (full_before) {
            /* The idle pages are not enough; the memory taken outside may have been given back
             * since (on an H200 a full device stayed refused until a trim before this): ask the
             * driver again, once a failing request. */
            pool->device_full = false;
        } else if (!pool->device_full) {
            break; /* no place under the cap: nothing to try again */
        } /* else the device turned out full half-way: search again, within the idle pages */
    }
    if (s == NF_ERR_OUT_OF_MEMORY && full_before) pool->device_full = true;
    if (s == NF_ERR_OUT_OF_MEMORY)
        report_out_of_memory(pool, rounded, pool->device_full ? "the device is full and the idle pages are not enough"
                                                              : "no placement fits under the capacity");
    return s;
}

nf_status nf_alloc(nf_pool *pool, size_t size, void *stream, void **ptr_out) {
    return nf_alloc_group(pool, size, stream, 0, ptr_out);
}

nf_status nf_alloc_group(nf_pool *pool, size_t size, void *stream, uint64_t group, void **ptr_out) {
    if (!pool || !ptr_out) return NF_ERR_INVALID_ARG;
    *ptr_out = NULL;
    if (size == 0) return NF_OK;
    pthread_mutex_lock(&pool->lock);
    nf_status s = alloc_locked(pool, size, stream, group, ptr_out);
    pthread_mutex_unlock(&pool->lock);
    return s;
}

static bool freed_recently(const nf_pool *pool, uint64_t addr) {
    for (uint32_t i = 0; i < sizeof pool->recent_frees / sizeof pool->recent_frees[0]; i++)
        if (pool->recent_frees[i] == addr) return true;
    return false;
}

/* Why a pointer is not a live block's start: for the error status and message. A pointer inside
 * free space is a double free if a block started there (still a block of its own, or freed recently
 * and since merged), else a pointer never allocated. */
static nf_status classify_bad_free(nf_pool *pool, uint64_t addr) {
    pool->stats.num_invalid_frees++;
    if (pool->delegated) { /* no free blocks to look in: the recent frees are all there is */
        bool twice = freed_recently(pool, addr);
        pool_log(pool, NF_LOG_ERROR, "free of 0x%llx: %s", (unsigned long long)addr,
                 twice ? "already free (double free)" : "not a live block of this pool");
        return twice ? NF_ERR_DOUBLE_FREE : NF_ERR_INVALID_POINTER;
    }
    const block *b = pool->first;
    if (addr >= pool->base && addr < pool->base + pool->virtual_bytes)
        while (b && addr >= b->addr + b->size) b = b->next;
    else
        b = NULL;
    const char *why;
    nf_status s = NF_ERR_INVALID_POINTER;
    if (!b) why = "not from this pool";
    else if (b->live) why = "points inside a live block";
    else if (addr == b->addr || freed_recently(pool, addr)) {
        why = "already free (double free)";
        s = NF_ERR_DOUBLE_FREE;
    } else why = "never allocated";
    pool_log(pool, NF_LOG_ERROR, "free of 0x%llx: %s", (unsigned long long)addr, why);
    return s;
}

/* Frees live block b on stream idx, whichever kind of pool, and on success remembers its address
 * for double-free reports and counts it: what nf_free and nf_free_group do for each block. */
static nf_status release_counted(nf_pool *pool, block *b, uint32_t idx) {
    uint64_t addr = b->addr; /* b is recycled by a delegated release */
    nf_status s = pool->delegated ? delegated_release(pool, b, idx) : block_release_live(pool, b, idx);
    if (s == NF_OK) {
        pool->recent_frees[pool->recent_free_next++ % 256] = addr;
        pool->stats.num_frees++;
    }
    return s;
}

nf_status nf_free(nf_pool *pool, void *ptr, void *stream) {
    if (!pool) return NF_ERR_INVALID_ARG;
    if (!ptr) return NF_OK;
    pthread_mutex_lock(&pool->lock);
    uint64_t addr = (uint64_t)(uintptr_t)ptr;
    nf_status s;
    block *b = ptr_map_get(&pool->live, addr);
    uint32_t idx;
    if (!b) s = classify_bad_free(pool, addr);
    else if ((s = stream_index(pool, stream, &idx)) == NF_OK)
        s = release_counted(pool, b, idx);
    pthread_mutex_unlock(&pool->lock);
    return s;
}

nf_status nf_free_group(nf_pool *pool, uint64_t group, void *stream, uint64_t *freed_out) {
    if (freed_out) *freed_out = 0;
    if (!pool || group == 0) return NF_ERR_INVALID_ARG;
    pthread_mutex_lock(&pool->lock);
    /* The group's blocks are listed first, from the pointer map (every live block, in either kind
     * of pool): freeing changes the map under a walk. */
    uint64_t count = 0, capacity = 0, *addrs = NULL;
    nf_status s = NF_OK;
    for (uint64_t i = 0; i < pool->live.capacity && s == NF_OK; i++) {
        const block *b = pool->live.keys[i] ? pool->live.values[i] : NULL;
        if (!b || b->group != group) continue;
        if (count == capacity) {
            capacity = capacity ? 2 * capacity : 64;
            uint64_t *grown = realloc(addrs, capacity * sizeof *grown);
            if (!grown) s = NF_ERR_NO_MEMORY_HOST;
            else addrs = grown;
        }
        if (s == NF_OK) addrs[count++] = b->addr;
    }
    uint32_t idx;
    if (s == NF_OK && count) s = stream_index(pool, stream, &idx);
    for (uint64_t i = 0; s == NF_OK && i < count; i++)
        if ((s = release_counted(pool, ptr_map_get(&pool->live, addrs[i]), idx)) == NF_OK && freed_out) (*freed_out)++;
    pthread_mutex_unlock(&pool->lock);
    free(addrs);
    return s;
}

nf_status nf_record_stream(nf_pool *pool, void *ptr, void *stream) {
    if (!pool || !ptr) return NF_ERR_INVALID_ARG;
    pthread_mutex_lock(&pool->lock);
    block *b = ptr_map_get(&pool->live, (uint64_t)(uintptr_t)ptr);
    uint32_t idx;
    nf_status s = b ? stream_index(pool, stream, &idx) : NF_ERR_INVALID_POINTER;
    if (s == NF_OK) b->fence_mask |= stream_bit(idx);
    pthread_mutex_unlock(&pool->lock);
    return s;
}

/* ---- trimming, steps, capacity ------------------------------------------------------------ */

/* Gives back idle memory down to keep_bytes held (whole pages, rounded down), whichever kind of
 * pool; *released counts what went. */
static nf_status trim_locked(nf_pool *pool, uint64_t keep_bytes, uint64_t *released) {
    return pool->delegated ? delegated_trim(pool, keep_bytes, released)
                           : pages_trim(pool, keep_bytes / pool->gran, released);
}

nf_status nf_trim(nf_pool *pool, uint64_t keep_bytes, uint64_t *released_out) {
    if (!pool) return NF_ERR_INVALID_ARG;
    uint64_t released = 0;
    pthread_mutex_lock(&pool->lock);
    nf_status s = trim_locked(pool, keep_bytes, &released);
    pthread_mutex_unlock(&pool->lock);
    if (released_out) *released_out = released;
    return s;
}

nf_status nf_phase_mark(nf_pool *pool, nf_phase *mark) {
    if (!pool || !mark) return NF_ERR_INVALID_ARG;
    pthread_mutex_lock(&pool->lock);
    mark->held_bytes = pool->stats.reserved_bytes.current;
    mark->live_peak = pool->live_high_water;
    pthread_mutex_unlock(&pool->lock);
    return NF_OK;
}

nf_status nf_phase_return(nf_pool *pool, const nf_phase *mark, uint64_t *released_out) {
    if (released_out) *released_out = 0;
    if (!pool || !mark) return NF_ERR_INVALID_ARG;
    uint64_t released = 0;
    pthread_mutex_lock(&pool->lock);
    /* Growth forgets the phase's peak (I13 keeps it at or above the live bytes); a tight budget
     * may turn loose again, which only makes fewer free neighbours mergeable (I2 still holds). */
    uint64_t live = pool->stats.allocated_bytes.current;
    uint64_t peak = mark->live_peak > live ? mark->live_peak : live;
    if (peak < pool->live_high_water) {
        pool->live_high_water = peak;
        budget_check(pool);
    }
    nf_status s = trim_locked(pool, mark->held_bytes, &released); /* held bytes are whole pages */
    pthread_mutex_unlock(&pool->lock);
    if (released_out) *released_out = released;
    return s;
}

nf_status nf_pool_enable_peer_access(nf_pool *pool, int device) {
    if (!pool) return NF_ERR_INVALID_ARG;
    if (!pool->backend->add_peers) return NF_ERR_UNSUPPORTED;
    pthread_mutex_lock(&pool->lock);
    nf_status s = call_add_peers(pool, device);
    if (s == NF_OK && !pool->delegated) s = pages_grant_access_again(pool); /* a block backend grants at once */
    pthread_mutex_unlock(&pool->lock);
    return s;
}

nf_status nf_step_mark(nf_pool *pool) {
    if (!pool) return NF_ERR_INVALID_ARG;
    pthread_mutex_lock(&pool->lock);
    pool->stats.num_steps++;
    /* A quiet moment to note how far each stream has got, once the host has had to wait for one:
     * a later wait for work queued before this step (an unmap, mostly) then asks this event and
     * finds it done, rather than recording a new one and waiting for all work queued since. One
     * record a stream a step, and none for a job that never made the host wait. */
    nf_status s = NF_OK;
    if (pool->marks_steps_with_events)
        for (uint32_t i = 0; i < pool->stream_count && s == NF_OK; i++)
            s = stream_event_cover(pool, &pool->streams[i], pool->free_seq);
    pthread_mutex_unlock(&pool->lock);
    return s;
}

nf_status nf_pool_set_capacity(nf_pool *pool, uint64_t capacity) {
    if (!pool) return NF_ERR_INVALID_ARG;
    uint64_t cap_pages = capacity / pool->gran; /* whole pages, rounded down, as in nf_pool_create */
    if (capacity && !cap_pages) return NF_ERR_INVALID_ARG;
    pthread_mutex_lock(&pool->lock);
    if (pool->delegated) {
        nf_status s = delegated_set_capacity(pool, cap_pages);
        pthread_mutex_unlock(&pool->lock);
        return s;
    }
    if (cap_pages > pool->page_count) cap_pages = 0;
    pool->cap_pages = cap_pages;
    uint64_t released = 0;
    nf_status s = NF_OK;
    if (cap_pages && pool->phys_count > cap_pages) s = pages_trim(pool, cap_pages, &released);
    else pool->cap_slack = 0;
    budget_check(pool);
    pthread_mutex_unlock(&pool->lock);
    return s;
}
