/*
 * The pool's internal state, shared by the files of src/core. Not installed.
 *
 *   virtual range   base                                                        base + virtual_bytes
 *                   |-- block --|-- block --|------- block -------|-- block -----------------------|
 *   pages           [  page 0  ][  page 1  ][  page 2  ][  page 3  ][ page 4 ] ...
 *                    mapped      mapped      idle       unmapped
 *
 * Blocks tile the whole virtual range in address order; every byte belongs to exactly one block.
 * Pages are the backend's granularity. A virtual page is backed by a physical page while a live
 * block overlaps it; a physical page whose blocks are all freed stays mapped (idle), possibly at
 * several virtual places (see pages.c), until it serves another block, the cap binds or nf_trim
 * runs.
 *
 * Invariants (checked by nf_pool_check, see check.c):
 *   I1  sum(block.size) == virtual_bytes, and next.addr == addr + size for neighbours
 *   I2  two free neighbours are never mergeable (coalescing is eager)
 *   I3  free blocks == blocks in the free index, each in the bin of its size
 *   I4  live blocks == entries of the pointer map; allocation.current == |live blocks|
 *   I5  allocated_bytes.current == sum(live block.size)
 *   I6  page.live_blocks == |live blocks overlapping the page|, for every virtual page
 *   I7  page.live_blocks > 0  =>  page is mapped to a physical page P with P.busy_va == the
 *       page's place (the page; for a pair, its even page); and access granted (no_access == 0);
 *       a physical page is busy through at most one of its <= MAX_ALIASES places, and busy iff a
 *       page of that place has live blocks; a pair's places are even pages, both pages mapped to
 *       it; pages_without_access == |pages with no_access|
 *   I8  idle lists == { physical pages : busy_va == none }, by span;
 *       idle_bytes == sum(idle span) * gran
 *   I9  mapped_bytes.current == |mapped virtual pages| * gran; every mapped page < mapped_end_page
 *   I10 reserved_bytes.current == sum(physical span) * gran == phys_count * gran
 *   I11 capacity != 0  =>  sum(physical span) <= cap_pages + cap_slack
 *   I12 every gauge: current <= peak
 *   I13 allocated_bytes.current <= live_high_water  (the policy's peak; nf_stats_reset_peaks
 *       leaves it, nf_phase_return lowers it to no less than the live bytes)
 *   I14 every page's last_free_seq <= free_seq
 *   I15 config.pin_pages  =>  |mapped virtual pages| == |physical pages| (one place each), and no
 *       unmap or release call was ever made
 *   I16 |physical pages| >= reserve_pages
 */
#ifndef NOFRAG_POOL_INTERNAL_H
#define NOFRAG_POOL_INTERNAL_H

#include <pthread.h>

#include "nofrag.h"
#include "nofrag_backend.h"

#define NF_NO_PAGE (-1)
#define BUDGET_TIGHT_PERCENT 10 /* see budget_tight */
#define NO_STREAM UINT32_MAX /* stream_idx of a block no stream has touched */

static inline uint64_t stream_bit(uint32_t idx) { return 1ull << (idx < 63 ? idx : 63); }

/* Whether a fence mask names no stream but idx (so idx, ordered after its own work, need not
 * wait). Bit 63 stands for several streams, so it never counts as idx's alone. */
static inline bool fence_only_own(uint64_t mask, uint32_t idx) {
    return idx < 63 ? (mask & ~(1ull << idx)) == 0 : mask == 0;
}

typedef struct block {
    uint64_t addr;
    uint64_t size;
    struct block *prev; /* address-order neighbours; NULL at the range's ends */
    struct block *next;
    struct block *free_prev; /* links in the free index bin; valid while in_index */
    struct block *free_next;
    /* A free block's fence: the streams (fence_mask, one bit per stream index, bit 63 for every
     * index >= 63) known to have used it, up to free number fence_seq. A stream that is the mask's
     * only one may reuse the block at once (stream order protects it); any other stream only once
     * every stream's work queued before that free is done or ordered first (the block may have
     * been used on streams never named: pool_fence_known_done); fence_seq == 0 means no fence. A live block's fence_mask holds the
     * streams it is used on: its allocating stream and any added by nf_record_stream. */
    uint64_t fence_seq;
    uint64_t fence_mask;
    uint64_t group;      /* a live block's nf_alloc_group group; 0: none */
    uint32_t stream_idx; /* the stream of the last alloc or free (for the walker) */
    uint8_t live;
    uint8_t in_index;
} block;

/* A virtual page of the range. */
typedef struct page {
    int32_t phys;         /* physical page mapped here (index into pool->phys), NF_NO_PAGE if none */
    int32_t alias_next;   /* next virtual page mapped to the same physical page */
    uint32_t live_blocks; /* live blocks overlapping the page */
    uint8_t no_access;    /* mapped, but granting access failed: to be granted before use */
    /* Work through this virtual page was queued before free number last_free_seq (0: none): what
     * unmapping the page waits for. Its physical page's fence is no substitute: once the physical
     * page serves another place it gathers newer work there, which an unmap here need not wait
     * for (I14). */
    uint64_t last_free_seq;
} page;

/* A physical page: held from the backend, mapped at up to MAX_ALIASES virtual pages. */
typedef struct phys_page {
    uint64_t handle;      /* 0: slot unused */
    int32_t busy_va;      /* the virtual page through which live blocks use it, NF_NO_PAGE if idle */
    int32_t last_va;      /* the virtual page of its last use */
    int32_t first_alias;  /* head of its list of virtual pages */
    int32_t idle_prev;    /* idle list links (physical page indices) */
    int32_t idle_next;
    uint16_t aliases;
    uint8_t ever_mapped;  /* a later mapping counts as a remap */
    /* Pool pages in the handle: 1, or 2 for a pair (nf_config.pair_min_pages), which is mapped
     * only whole, at an even virtual page and the one after it (its place, named by the even one:
     * busy_va, last_va and the alias list name places). */
    uint8_t span;
    uint32_t stamp;       /* scratch mark for range_cost */
    /* Work that may still touch the page: the streams in fence_mask, up to free number fence_seq. */
    uint64_t fence_seq;
    uint64_t fence_mask;
    /* Work queued through another alias before the page was claimed through busy_va. Block fences
     * know only virtual addresses, so every block placed on the page while it is busy must also
     * wait for this, unless it is on one of these streams. */
    uint64_t alias_fence_seq;
    uint64_t alias_fence_mask;
} phys_page;

typedef struct stream_state {
    void *stream;
    uint64_t done_seq;     /* frees on this stream with seq <= done_seq have no pending work */
    uint64_t event;        /* last recorded event (0: none) */
    uint64_t event_seq;    /* the free sequence the event covers */
    /* ordered_after[i]: work queued on this stream from now on runs after stream i's work queued
     * before free number ordered_after[i], because the pool made this stream wait for it on the
     * device (nf_config.reuse_across_streams). Streams 0..62 only (bit 63 stands for several). */
    uint64_t ordered_after[63];
} stream_state;

/* Free blocks by size: TLSF's two-level bitmap index (block_index.c). */
#define INDEX_SL_LOG2 5
#define INDEX_SL_COUNT (1u << INDEX_SL_LOG2)
#define INDEX_FL_COUNT 64
typedef struct block_index {
    uint64_t fl_bitmap;
    uint32_t sl_bitmap[INDEX_FL_COUNT];
    block *bins[INDEX_FL_COUNT][INDEX_SL_COUNT];
    uint64_t count;
} block_index;

void index_insert(block_index *index, block *b);
void index_remove(block_index *index, block *b);
/* The bin a block of `size` lives in. */
void index_bin_of(uint64_t size, uint32_t *fl, uint32_t *sl);
/* The first non-empty bin at or after (fl, sl) in size order; false if none. */
bool index_next_bin(const block_index *index, uint32_t fl, uint32_t sl, uint32_t *fl_out,
                    uint32_t *sl_out);

/* Address -> live block (ptr_map.c): open addressing, linear probing, backward-shift delete. */
typedef struct ptr_map {
    uint64_t *keys; /* 0 marks an empty slot; addresses are never 0 */
    block **values;
    uint64_t capacity; /* power of two */
    uint64_t count;
} ptr_map;

bool ptr_map_init(ptr_map *map, uint64_t capacity);
void ptr_map_free(ptr_map *map);
bool ptr_map_put(ptr_map *map, uint64_t key, block *value);
block *ptr_map_get(const ptr_map *map, uint64_t key);
bool ptr_map_remove(ptr_map *map, uint64_t key);

/* Block structs come from slabs so that a pool does few host allocations. */
typedef struct block_slab {
    struct block_slab *next;
    block blocks[];
} block_slab;

struct nf_pool {
    pthread_mutex_t lock;
    nf_config config;
    nf_backend *backend;
    uint64_t gran;      /* the pool's page size (config.page_bytes or the backend's granularity) */
    uint32_t gran_log2;
    uint64_t backend_pages; /* backend granules per pool page */
    uint64_t base;
    uint64_t virtual_bytes;
    uint64_t cap_pages;  /* 0: no cap */
    uint64_t reserve_pages; /* config.reserve_bytes in pages: made at creation, never given back */
    uint64_t cap_slack;  /* pages held above the cap after it was lowered; see I11 */
    uint64_t pages_without_access; /* mapped pages whose set-access failed (page.no_access) */
    uint64_t mapped_end_page;      /* one past the highest virtual page ever mapped: none above */

    block *first;       /* lowest block */
    block_index index;
    ptr_map live;
    block_slab *slabs;
    block *spare_blocks; /* unused block structs, linked through next */

    page *pages; /* the virtual pages */
    uint64_t page_count;
    phys_page *phys; /* physical page slots */
    uint64_t phys_capacity, phys_used; /* slots allocated, slots ever handed out */
    int32_t *phys_free;                /* released slots */
    uint64_t phys_free_count;
    uint64_t phys_count;               /* pool pages of physical memory held (a pair counts 2) */
    /* Idle physical pages, least recently idled first: [0] single pages, [1] pairs. */
    int32_t idle_head[2];
    int32_t idle_tail[2];
    uint64_t idle_count; /* pool pages of idle physical memory (a pair counts 2) */
    uint32_t stamp;

    stream_state *streams;
    uint32_t stream_count;
    uint32_t stream_capacity;
    uint32_t last_stream; /* index of the stream of the last call */
    uint64_t free_seq; /* incremented by every free */
    /* config.reuse_across_streams and a backend that can make a stream wait on the device */
    bool order_on_device;
    /* config.pair_min_pages (never with pin_pages): physical pages of two pool pages may exist. Without
     * them every place is one page, and the page layer's hot loops skip the pair cases. */
    bool pairs;
    /* A cap within BUDGET_TIGHT_PERCENT of the live peak so far: differently fenced free
     * neighbours then merge at once (blocks_mergeable, budget_check in pool.c), and requests
     * smaller than a page go first to pages already busy (placement.c, step 0). */
    bool budget_tight;
    /* The backend had no memory for a page below the cap (NF_BACKEND_OUT_OF_MEMORY): memory
     * outside the pool took it. Until a page is created again or a trim gives memory back, the
     * pool grows no further and serves requests from its idle pages (pages.c, phys_for); a request
     * they cannot serve asks the backend once more before failing (pool.c, alloc_locked). */
    bool device_full;
    /* The backend places blocks (NF_BACKEND_CAP_PLACES_BLOCKS): delegated.c keeps the books; no
     * virtual range, pages or free index. */
    bool delegated;
    /* Set once the host has had to wait for a stream: from then on each step mark records every
     * stream's event (nf_step_mark), so that a later wait for work queued before the step finds it
     * done by a query instead of a new record and a wait for everything queued since. */
    bool marks_steps_with_events;
    /* The live peak so far, for the policy (budget_tight, how far the pool grows: pages.c): like
     * stats.allocated_bytes.peak, but nf_stats_reset_peaks leaves it, so that a user measuring a
     * phase's peak does not change how the pool places and grows. */
    uint64_t live_high_water;

    /* Addresses of the most recent frees: a second free of one of them is reported as a double
     * free even after its block has merged into a larger free block. */
    uint64_t recent_frees[256];
    uint32_t recent_free_next;

    nf_stats stats; /* gauges and counters; derived fields are filled by nf_stats_get */
};

/* For the invariant checkers (stats.c, pages.c): inside a function of `pool` returning nf_status,
 * logs which invariant broke and returns NF_ERR_CORRUPT when cond is false. */
#define INVARIANT(cond, ...)                                                         \
    do {                                                                             \
        if (!(cond)) {                                                               \
            pool_log(pool, NF_LOG_ERROR, "invariant broken: " __VA_ARGS__);          \
            return NF_ERR_CORRUPT;                                                   \
        }                                                                            \
    } while (0)

/* Logging through the config's callback (pool.c). */
void pool_log(nf_pool *pool, nf_log_level level, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static inline void gauge_add(nf_gauge *g, uint64_t amount) {
    g->current += amount;
    g->total += amount;
    if (g->current > g->peak) g->peak = g->current;
}

static inline void gauge_sub(nf_gauge *g, uint64_t amount) { g->current -= amount; }

static inline uint64_t page_of(const nf_pool *pool, uint64_t addr) {
    return (addr - pool->base) >> pool->gran_log2;
}
/* Index of the last page overlapping [addr, addr + size), size > 0. */
static inline uint64_t page_last(const nf_pool *pool, uint64_t addr, uint64_t size) {
    return (addr + size - 1 - pool->base) >> pool->gran_log2;
}

/* Block structs from the pool's slabs (pool.c): a zeroed block, NULL when host memory runs out. */
block *block_new(nf_pool *pool);
void block_recycle(nf_pool *pool, block *b);

bool blocks_mergeable(const nf_pool *pool, const block *a, const block *b);
/* Stream bookkeeping (pool.c), for the page layer. */
bool pool_fence_known_done(const nf_pool *pool, uint64_t mask, uint64_t seq, uint32_t idx);
nf_status pool_stream_reach(nf_pool *pool, uint32_t idx, uint64_t seq, bool wait, bool *done_out);
nf_status pool_order_after(nf_pool *pool, uint64_t mask, uint64_t seq, uint32_t idx);

#endif /* NOFRAG_POOL_INTERNAL_H */
