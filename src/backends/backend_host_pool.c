/*
 * Host block backend: a stand-in for CUDA's stream-ordered memory pool in real host memory, so that
 * pools whose backend places blocks (NF_BACKEND_CAP_PLACES_BLOCKS) can be tested without a GPU.
 *
 * Each block is one aligned host allocation with a header before it holding its size. A freed
 * block is kept in the cache and serves a later request of at most its size, whole (the waste a
 * caching pool has); trim_to frees cached blocks, largest first, until held memory is low enough.
 * Held memory = live blocks + cached blocks, each counted at its allocated size.
 */
#include <stdlib.h>
#include <string.h>

#include "nofrag_backend.h"

enum { HEADER_BYTES = 512 }; /* keeps the block itself 512-byte aligned */

typedef struct cached_block {
    uint64_t addr;
    uint64_t size;
} cached_block;

typedef struct host_pool_ctx {
    uint64_t device_bytes; /* 0: no limit */
    uint64_t live_bytes;
    uint64_t cached_bytes;
    cached_block *cache;
    uint64_t cache_count, cache_capacity;
} host_pool_ctx;

static uint64_t *size_slot(uint64_t addr) { return (uint64_t *)(uintptr_t)(addr - HEADER_BYTES); }

/* Index of the smallest cached block of at least `bytes`, or cache_count if none. */
static uint64_t cache_best_fit(const host_pool_ctx *c, uint64_t bytes) {
    uint64_t best = c->cache_count;
    for (uint64_t i = 0; i < c->cache_count; i++)
        if (c->cache[i].size >= bytes && (best == c->cache_count || c->cache[i].size < c->cache[best].size)) best = i;
    return best;
}

static void cache_take(host_pool_ctx *c, uint64_t i) {
    c->cached_bytes -= c->cache[i].size;
    c->cache[i] = c->cache[--c->cache_count];
}

static int host_pool_block_alloc(void *ctx, uint64_t bytes, void *stream, uint64_t *addr_out) {
    (void)stream;
    host_pool_ctx *c = ctx;
    uint64_t i = cache_best_fit(c, bytes);
    if (i < c->cache_count) {
        *addr_out = c->cache[i].addr;
        c->live_bytes += c->cache[i].size;
        cache_take(c, i);
        return 0;
    }
    uint64_t size = (bytes + HEADER_BYTES - 1) / HEADER_BYTES * HEADER_BYTES;
    if (c->device_bytes && c->live_bytes + c->cached_bytes + size > c->device_bytes) return NF_BACKEND_OUT_OF_MEMORY;
    char *raw = aligned_alloc(HEADER_BYTES, HEADER_BYTES + size);
    if (!raw) return NF_BACKEND_OUT_OF_MEMORY;
    uint64_t addr = (uint64_t)(uintptr_t)(raw + HEADER_BYTES);
    *size_slot(addr) = size;
    c->live_bytes += size;
    *addr_out = addr;
    return 0;
}

static int host_pool_block_free(void *ctx, uint64_t addr, void *stream) {
    (void)stream;
    host_pool_ctx *c = ctx;
    if (c->cache_count == c->cache_capacity) {
        uint64_t cap = c->cache_capacity ? 2 * c->cache_capacity : 64;
        cached_block *grown = realloc(c->cache, cap * sizeof *grown);
        if (!grown) return 3; /* "no host memory" (error_name) */
        c->cache = grown;
        c->cache_capacity = cap;
    }
    uint64_t size = *size_slot(addr);
    c->cache[c->cache_count++] = (cached_block){addr, size};
    c->live_bytes -= size;
    c->cached_bytes += size;
    return 0;
}

static int host_pool_held_bytes(void *ctx, uint64_t *bytes_out) {
    host_pool_ctx *c = ctx;
    *bytes_out = c->live_bytes + c->cached_bytes;
    return 0;
}

static int host_pool_trim_to(void *ctx, uint64_t keep_bytes) {
    host_pool_ctx *c = ctx;
    while (c->cache_count && c->live_bytes + c->cached_bytes > keep_bytes) {
        uint64_t largest = 0;
        for (uint64_t i = 1; i < c->cache_count; i++)
            if (c->cache[i].size > c->cache[largest].size) largest = i;
        free((char *)(uintptr_t)c->cache[largest].addr - HEADER_BYTES);
        cache_take(c, largest);
    }
    return 0;
}

static const char *host_pool_error_name(void *ctx, int code) {
    (void)ctx;
    switch (code) {
    case NF_BACKEND_OUT_OF_MEMORY: return "no room on the simulated device";
    case 3: return "no host memory for the cache's list";
    }
    return "unknown host pool error";
}

static void host_pool_destroy(nf_backend *self) {
    host_pool_ctx *c = self->ctx;
    host_pool_trim_to(c, 0); /* live blocks are the pool's to free; cached ones are ours */
    free(c->cache);
    free(c);
    free(self);
}

nf_status nf_backend_host_pool_create(uint64_t device_bytes, nf_backend **backend_out) {
    if (!backend_out) return NF_ERR_INVALID_ARG;
    *backend_out = NULL;
    nf_backend *b = calloc(1, sizeof *b);
    host_pool_ctx *c = calloc(1, sizeof *c);
    if (!b || !c) {
        free(b);
        free(c);
        return NF_ERR_NO_MEMORY_HOST;
    }
    c->device_bytes = device_bytes;
    b->name = "host-pool";
    b->caps = NF_BACKEND_CAP_PLACES_BLOCKS | NF_BACKEND_CAP_HOST_ACCESSIBLE;
    b->granularity = 2u << 20;
    b->ctx = c;
    b->block_alloc = host_pool_block_alloc;
    b->block_free = host_pool_block_free;
    b->held_bytes = host_pool_held_bytes;
    b->trim_to = host_pool_trim_to;
    b->error_name = host_pool_error_name;
    b->destroy = host_pool_destroy;
    *backend_out = b;
    return NF_OK;
}
