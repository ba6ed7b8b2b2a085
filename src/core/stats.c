/*
 * Status strings, statistics (read, reset, JSON), the invariant checker and the pool walker.
 */
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "delegated.h"
#include "pages.h"
#include "pool_internal.h"

const char *nf_status_str(nf_status status) {
    switch (status) {
    case NF_OK: return "ok";
    case NF_ERR_INVALID_ARG: return "invalid argument";
    case NF_ERR_OUT_OF_MEMORY: return "out of memory under the pool's capacity";
    case NF_ERR_INVALID_POINTER: return "pointer not allocated by this pool";
    case NF_ERR_DOUBLE_FREE: return "block already free (double free)";
    case NF_ERR_BACKEND: return "backend (driver) call failed";
    case NF_ERR_UNSUPPORTED: return "not supported by this backend or build";
    case NF_ERR_CORRUPT: return "pool invariant broken";
    case NF_ERR_NO_MEMORY_HOST: return "out of host memory for bookkeeping";
    }
    return "unknown status";
}

/* Largest free run lying wholly on mapped pages, and all free mapped bytes: walks blocks and the
 * pages under each free block. */
static void free_mapped_figures(const nf_pool *pool, uint64_t *largest_out, uint64_t *total_out) {
    uint64_t largest = 0, run = 0;
    uint64_t gran = pool->gran;
    /* No page above mapped_end_page is mapped: the walk stops there, not at the end of a range
     * that may span a terabyte. */
    uint64_t mapped_end = pool->base + pool->mapped_end_page * gran;
    for (const block *b = pool->first; b && b->addr < mapped_end; b = b->next) {
        if (b->live) {
            run = 0;
            continue;
        }
        uint64_t addr = b->addr, end = b->addr + b->size < mapped_end ? b->addr + b->size : mapped_end;
        while (addr < end) {
            uint64_t p = page_of(pool, addr);
            uint64_t page_end = pool->base + (p + 1) * gran;
            uint64_t piece = (page_end < end ? page_end : end) - addr;
            if (pages_mapped(pool, p)) {
                run += piece;
                *total_out += piece;
                if (run > largest) largest = run;
            } else {
                run = 0;
                /* Skip the rest of an unmapped stretch page by page. */
            }
            addr += piece;
        }
    }
    *largest_out = largest;
}

nf_status nf_stats_get(nf_pool *pool, nf_stats *stats) {
    if (!pool || !stats) return NF_ERR_INVALID_ARG;
    pthread_mutex_lock(&pool->lock);
    nf_status s = pool->delegated ? delegated_refresh(pool) : NF_OK; /* the driver may have given some away */
    *stats = pool->stats;
    stats->capacity_bytes = pool->cap_pages * pool->gran;
    stats->granularity_bytes = pool->gran;
    stats->backend_calls = 0;
#define NF_X_CALLS(name, desc) \
    if (strncmp(#name, "calls_", 6) == 0) stats->backend_calls += stats->name;
    NF_STATS_COUNTERS(NF_X_CALLS)
#undef NF_X_CALLS
    stats->free_mapped_bytes = 0;
    free_mapped_figures(pool, &stats->largest_free_mapped_bytes, &stats->free_mapped_bytes);
    pthread_mutex_unlock(&pool->lock);
    stats->overhead_ratio = stats->allocated_bytes.peak
                                ? (double)stats->reserved_bytes.peak / (double)stats->allocated_bytes.peak
                                : 0.0;
    stats->fragmentation = stats->free_mapped_bytes
                               ? 1.0 - (double)stats->largest_free_mapped_bytes /
                                           (double)stats->free_mapped_bytes
                               : 0.0;
    return s;
}

nf_status nf_stats_reset_peaks(nf_pool *pool) {
    if (!pool) return NF_ERR_INVALID_ARG;
    pthread_mutex_lock(&pool->lock);
#define NF_X_RESET(name, desc) pool->stats.name.peak = pool->stats.name.current;
    NF_STATS_GAUGES(NF_X_RESET)
#undef NF_X_RESET
    pthread_mutex_unlock(&pool->lock);
    return NF_OK;
}

nf_status nf_stats_to_json(const nf_stats *stats, char *buf, size_t buf_size, size_t *needed_out) {
    if (!stats || (!buf && buf_size)) return NF_ERR_INVALID_ARG;
    char tmp[8192];
    size_t n = 0;
#define APPEND(...) n += (size_t)snprintf(tmp + n, n < sizeof tmp ? sizeof tmp - n : 0, __VA_ARGS__)
    APPEND("{");
#define NF_X_GAUGE_JSON(name, desc)                                                                \
    APPEND("\"" #name ".current\":%" PRIu64 ",\"" #name ".peak\":%" PRIu64 ",\"" #name            \
           ".total\":%" PRIu64 ",",                                                                \
           stats->name.current, stats->name.peak, stats->name.total);
#define NF_X_COUNTER_JSON(name, desc) APPEND("\"" #name "\":%" PRIu64 ",", stats->name);
    NF_STATS_GAUGES(NF_X_GAUGE_JSON)
    NF_STATS_COUNTERS(NF_X_COUNTER_JSON)
#undef NF_X_GAUGE_JSON
#undef NF_X_COUNTER_JSON
    APPEND("\"capacity_bytes\":%" PRIu64 ",\"granularity_bytes\":%" PRIu64
           ",\"backend_calls\":%" PRIu64 ",\"largest_free_mapped_bytes\":%" PRIu64
           ",\"free_mapped_bytes\":%" PRIu64 ",\"overhead_ratio\":%.6f,\"fragmentation\":%.6f}",
           stats->capacity_bytes, stats->granularity_bytes, stats->backend_calls,
           stats->largest_free_mapped_bytes, stats->free_mapped_bytes, stats->overhead_ratio,
           stats->fragmentation);
#undef APPEND
    if (needed_out) *needed_out = n;
    if (buf_size) {
        size_t copy = n < buf_size - 1 ? n : buf_size - 1;
        if (copy > sizeof tmp - 1) copy = sizeof tmp - 1;
        memcpy(buf, tmp, copy);
        buf[copy] = '\0';
    }
    return NF_OK;
}

/* ---- invariants (the equations are listed in pool_internal.h) ---------------------------- */

static nf_status check_locked(nf_pool *pool) {
    if (pool->delegated) return delegated_check(pool);
    uint64_t sum = 0, live_sum = 0, live_count = 0, free_count = 0;
    const block *prev = NULL;
    for (const block *b = pool->first; b; b = b->next) {
        INVARIANT(b->prev == prev, "I1 neighbour links at 0x%" PRIx64, b->addr);
        INVARIANT(b->size > 0 && b->size % pool->config.alignment == 0, "I1 size at 0x%" PRIx64, b->addr);
        INVARIANT(b->addr == pool->base + sum, "I1 blocks tile the range at 0x%" PRIx64, b->addr);
        sum += b->size;
        if (b->live) {
            live_sum += b->size;
            live_count++;
            INVARIANT(ptr_map_get(&pool->live, b->addr) == b, "I4 live block 0x%" PRIx64 " in map", b->addr);
            INVARIANT(!b->in_index, "I3 live block in the free index");
        } else {
            free_count++;
            INVARIANT(b->in_index, "I3 free block 0x%" PRIx64 " not indexed", b->addr);
            INVARIANT(!prev || !blocks_mergeable(pool, prev, b), "I2 mergeable neighbours at 0x%" PRIx64, b->addr);
        }
        prev = b;
    }
    INVARIANT(sum == pool->virtual_bytes, "I1 blocks cover %" PRIu64 " of %" PRIu64, sum, pool->virtual_bytes);
    INVARIANT(free_count == pool->index.count, "I3 %" PRIu64 " free blocks, %" PRIu64 " indexed",
          free_count, pool->index.count);
    for (uint32_t fl = 0; fl < INDEX_FL_COUNT; fl++)
        for (uint32_t sl = 0; sl < INDEX_SL_COUNT; sl++) {
            bool bit = (pool->index.sl_bitmap[fl] >> sl) & 1u;
            INVARIANT(bit == (pool->index.bins[fl][sl] != NULL), "I3 bitmap of bin (%u,%u)", fl, sl);
            for (const block *b = pool->index.bins[fl][sl]; b; b = b->free_next) {
                uint32_t f, s;
                index_bin_of(b->size, &f, &s);
                INVARIANT(f == fl && s == sl && !b->live, "I3 block 0x%" PRIx64 " in wrong bin", b->addr);
            }
        }
    INVARIANT(live_count == pool->live.count, "I4 %" PRIu64 " live blocks, %" PRIu64 " in map",
          live_count, pool->live.count);
    INVARIANT(live_count == pool->stats.allocation.current, "I4 allocation gauge");
    INVARIANT(live_sum == pool->stats.allocated_bytes.current, "I5 allocated_bytes %" PRIu64 " != %" PRIu64,
          pool->stats.allocated_bytes.current, live_sum);

    /* I6: recount live blocks per page; the page layer checks the rest. */
    const block *b = pool->first;
    for (uint64_t p = 0; p < pool->page_count; p++) {
        uint64_t page_start = pool->base + (p << pool->gran_log2);
        uint64_t page_end = page_start + pool->gran;
        while (b && b->addr + b->size <= page_start) b = b->next;
        uint32_t count = 0;
        for (const block *c = b; c && c->addr < page_end; c = c->next) count += c->live;
        INVARIANT(pool->pages[p].live_blocks == count, "I6 page %" PRIu64 " counts %u live blocks, has %u", p,
              pool->pages[p].live_blocks, count);
    }
    nf_status s = pages_check(pool);
    if (s != NF_OK) return s;
#define NF_X_PEAK(name, desc) INVARIANT(pool->stats.name.current <= pool->stats.name.peak, "I12 " #name);
    NF_STATS_GAUGES(NF_X_PEAK)
#undef NF_X_PEAK
    INVARIANT(pool->stats.allocated_bytes.current <= pool->live_high_water, "I13 allocated_bytes %" PRIu64
              " above the live high-water mark %" PRIu64, pool->stats.allocated_bytes.current, pool->live_high_water);
    return NF_OK;
}

nf_status nf_pool_check(nf_pool *pool) {
    if (!pool) return NF_ERR_INVALID_ARG;
    pthread_mutex_lock(&pool->lock);
    nf_status s = check_locked(pool);
    pthread_mutex_unlock(&pool->lock);
    return s;
}

nf_status nf_pool_walk(nf_pool *pool, nf_walk_fn visitor, void *user) {
    if (!pool || !visitor) return NF_ERR_INVALID_ARG;
    pthread_mutex_lock(&pool->lock);
    if (pool->delegated) {
        nf_status s = delegated_walk(pool, visitor, user);
        pthread_mutex_unlock(&pool->lock);
        return s;
    }
    for (const block *b = pool->first; b; b = b->next) {
        nf_block_info info;
        info.address = b->addr;
        info.size = b->size;
        info.live = b->live;
        info.group = b->live ? b->group : 0;
        info.stream = b->stream_idx < pool->stream_count ? pool->streams[b->stream_idx].stream : NULL;
        uint64_t first = page_of(pool, b->addr), last = page_last(pool, b->addr, b->size);
        info.pages = (uint32_t)(last - first + 1);
        info.pages_mapped = 0;
        for (uint64_t q = first; q <= last; q++) info.pages_mapped += pages_mapped(pool, q);
        if (visitor(user, &info)) break;
    }
    pthread_mutex_unlock(&pool->lock);
    return NF_OK;
}
