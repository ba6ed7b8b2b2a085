/*
 * nofrag: a GPU memory allocator that keeps physical memory held close to the bytes live.
 *
 * Blocks are placed in one large virtual address range per pool; the range is backed by physical
 * pages (the backend's granularity, 2 MiB on CUDA) only where live blocks lie. Any free physical
 * page can therefore serve any request, whatever its virtual address.
 *
 * Conventions for every function below:
 *   - it returns an nf_status (NF_OK == 0) and writes results through out-parameters;
 *   - a NULL pool or NULL out-parameter gives NF_ERR_INVALID_ARG and changes nothing;
 *   - functions taking a pool are thread-safe (one mutex per pool) unless stated otherwise;
 *   - the library never prints: messages go to the log callback of nf_config.
 *
 * This header needs only the C standard headers below; no CUDA type appears in it. A stream is an
 * opaque `void *` (a cudaStream_t on the CUDA backend, any token on the host backend).
 */
#ifndef NOFRAG_H
#define NOFRAG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Everything declared here is exported from the shared library, even when the library is built
 * with -fvisibility=hidden (which keeps internals out of `nm -g`). */
#pragma GCC visibility push(default)

#define NF_VERSION_MAJOR 0
#define NF_VERSION_MINOR 1
#define NF_VERSION_PATCH 0
#define NF_VERSION_STRING "0.1.0"

/* The library's version as "MAJOR.MINOR.PATCH"; compare with NF_VERSION_STRING to catch a header
 * and library of different versions. Never fails; O(1); thread-safe. */
const char *nf_version(void);

typedef enum nf_status {
    NF_OK = 0,
    NF_ERR_INVALID_ARG,      /* NULL pool or out-parameter, bad config value */
    NF_ERR_OUT_OF_MEMORY,    /* the request cannot be met under the capacity (or address space) */
    NF_ERR_INVALID_POINTER,  /* free of a pointer this pool never returned, or an interior pointer */
    NF_ERR_DOUBLE_FREE,      /* free of a block that is already free */
    NF_ERR_BACKEND,          /* a backend primitive (driver call) failed; the log names the call */
    NF_ERR_UNSUPPORTED,      /* the backend lacks a capability the call needs */
    NF_ERR_CORRUPT,          /* nf_pool_check found a broken invariant; the log says which */
    NF_ERR_NO_MEMORY_HOST,   /* host memory for bookkeeping could not be allocated */
} nf_status;

/* A short, static, human-readable description of a status. Never NULL; unknown codes give
 * "unknown status". O(1); thread-safe. */
const char *nf_status_str(nf_status status);

typedef enum nf_log_level {
    NF_LOG_ERROR = 0,
    NF_LOG_WARN = 1,
    NF_LOG_INFO = 2,
    NF_LOG_DEBUG = 3,
} nf_log_level;

/* Receives one complete message (no trailing newline). Called with the pool's lock held: it must
 * not call back into the same pool. */
typedef void (*nf_log_fn)(void *user, nf_log_level level, const char *message);

typedef struct nf_backend nf_backend; /* see nofrag_backend.h */
typedef struct nf_pool nf_pool;

typedef struct nf_config {
    /* Physical cap in bytes: the pool never holds more physical memory than this (whole pages:
     * a cap that is not a multiple of the page size allows the pages below it). When a request
     * cannot be met under it the pool reclaims idle pages first, and only then fails. 0 means no
     * cap: the pool then grows to about 2% above the largest live total seen so far and serves
     * further requests from idle pages, so physical memory still follows the live peak. */
    uint64_t capacity;
    /* Virtual address space to reserve, bytes. 0: 4 x capacity, or 1 TiB when there is no cap.
     * Address space is cheap; a generous range lets placement avoid moving pages. */
    uint64_t virtual_bytes;
    /* Every block's address and size are multiples of this. Power of two, >= 256; 0 means the
     * default, 512 (PyTorch's block rounding), so a zero-initialised config is a valid one (no
     * cap, 1 TiB of address space, no log). */
    uint64_t alignment;
    nf_log_fn log;       /* may be NULL: messages are dropped */
    void *log_user;      /* passed to log */
    nf_log_level log_level; /* messages above this level are dropped; default NF_LOG_WARN */
    /* Physical page size in bytes: 0 (the default) takes the backend's granularity (2 MiB on
     * CUDA); otherwise a power of two that is a multiple of it. A driver call costs about the same
     * for a 2 MiB page as for a 16 MiB one, so larger pages mean fewer calls and less driver time
     * per byte moved, at the price of coarser memory: more held above the live bytes under a tight
     * cap (docs/placement.md has the trade-off per trace). */
    uint64_t page_bytes;
    /* Under a cap, by default the pool creates physical pages up to the cap (but never more than
     * 20% above the largest live total seen so far) before it moves idle ones to new places: the
     * cap is memory the job may use, and more pages mean fewer moves.
     * With hold_near_live it grows only to about 2% above the largest live total seen so far, as
     * without a cap, and moves idle pages beyond that; the cap stays a hard limit. For a cap that
     * is a safety limit rather than a budget (the device's size: the PyTorch front end's default),
     * so that held memory follows the live peak. No effect without a cap. */
    bool hold_near_live;
    /* Off by default. Turn it on only if every stream that touches a block is one the pool knows
     * (it allocated there, or nf_record_stream named it): a use on a stream it never heard of is
     * not waited for. (FSDP through the PyTorch front end went NaN in 3 of 5 runs while NCCL's
     * stream was unheard; the front end turns it on only where it hears it: docs/placement.md.)
     * Memory freed on one stream while work queued there may still use it can serve a request on
     * another stream at once: the requesting stream is made to wait on the device for that work
     * (the backend's stream_wait, cuStreamWaitEvent: no host wait). Without it such memory serves
     * other streams only once that work is known to be done, or after the host waits for it, and
     * meanwhile requests go to other memory (more held with several streams: FSDP, prefetching);
     * under a capacity within 10% of the live peak, such memory is kept whole and the host waits
     * for it instead (no failure where spreading ran out of pages, but more host waits).
     * The price: the requesting stream's next work starts after the other stream's work queued
     * before the free. Only where the backend has NF_BACKEND_CAP_STREAM_WAIT. */
    bool reuse_across_streams;
    /* Off by default. Every physical page stays at the virtual place where it was first mapped
     * for the pool's life: an idle page is never moved to another place nor mapped at a second
     * one, and nf_trim and a lowered cap release nothing (nf_pool_destroy releases all). Every
     * address the pool ever handed out stays backed by the same memory, freed or not, which is
     * what work recorded once and replayed later needs: a CUDA graph keeps using the addresses of
     * blocks freed while it was captured (the PyTorch front end makes such a pool per graph pool).
     * The price: the pool holds every page it ever touched, and a request that finds no free
     * place on mapped pages makes new ones (under a cap, fails rather than move a page). */
    bool pin_pages;
    /* Physical memory made when the pool is created and held for its life, bytes (rounded up to
     * whole pages; 0: none): nf_trim and a lowered cap give back nothing below it, and requests
     * use it before the pool makes more. For a job that must keep its memory against others that
     * take device memory later (NCCL's buffers, another process on the GPU), as JAX's
     * preallocation does. At most the capacity when there is one; not with pin_pages. */
    uint64_t reserve_bytes;
    /* Pairs of pages (0, the default of a zeroed config: off). A block of at least this many
     * pages backs each aligned pair of pages wholly inside it with one physical allocation of two
     * pages (a pair), mapped and moved as one: half the driver calls for the inside of large
     * blocks, while the edges of blocks and small blocks keep single pages. A pair is used whole
     * or not at all: an idle pair claimed through one page of its place holds the other page too,
     * which raises the smallest cap a job completes under (about half a percent on
     * gradient-accumulation jobs, docs/placement.md): give a cap at least 3% above the live peak.
     * Under a cap, a single page that finds none idle and no room takes the memory of an idle
     * pair (released, its pages made again as singles); a pair that finds no room takes two
     * singles. Refused with pin_pages and with a block backend. */
    uint64_t pair_min_pages;
} nf_config;

/* The defaults: no cap, 1 TiB of address space, 512-byte alignment, no log. */
nf_config nf_config_default(void);

/* Creates a pool over `backend`, reserving its virtual range at once (one backend call).
 * The backend must outlive the pool; the pool does not destroy it.
 * Fails with NF_ERR_INVALID_ARG iff config, backend or pool_out is NULL, or a config field is out
 * of range (alignment neither 0 nor a power of two >= 256, capacity below one page,
 * virtual_bytes < capacity, page_bytes not a power-of-two multiple of the backend's granularity,
 * alignment > page size, reserve_bytes over the capacity or the address space, reserve_bytes or
 * pair_min_pages with pin_pages; with a backend that places blocks, any of page_bytes,
 * reserve_bytes, pin_pages or pair_min_pages); NF_ERR_BACKEND
 * iff the reservation fails, NF_ERR_OUT_OF_MEMORY iff the device cannot hold reserve_bytes; NF_ERR_NO_MEMORY_HOST iff
 * bookkeeping memory cannot be had.
 * O(virtual_bytes / granularity) for the page table; thread-safe. */
nf_status nf_pool_create(const nf_config *config, nf_backend *backend, nf_pool **pool_out);

/* Destroys a pool: unmaps and releases every page and the virtual range, whether or not blocks are
 * still live (their pointers become invalid). It may record events on the streams that freed
 * blocks, so destroy the pool before those streams. NULL is a no-op returning NF_OK. Returns the first
 * backend failure met, after attempting every release. Not thread-safe against other calls on the
 * same pool. O(pages + blocks). */
nf_status nf_pool_destroy(nf_pool *pool);

/* Allocates `size` bytes (rounded up to the alignment) for use on `stream`, mapping physical pages
 * as needed. With config.reuse_across_streams, `stream` may be made to wait on the device for other
 * streams' work on the memory it gets: use the block on `stream`, or on streams ordered after work
 * queued on `stream` after this call returns. Size 0 gives NF_OK and *ptr_out == NULL. On failure *ptr_out is NULL and the pool is
 * unchanged apart from statistics and idle pages it may have mapped, moved or released; live
 * blocks are never touched, even when a driver call fails part-way.
 * Fails with NF_ERR_OUT_OF_MEMORY iff no placement fits under the capacity even after reclaiming
 * idle pages (a report goes to the log), the device's own limit counting as the capacity once
 * the backend has had no memory for a page (NF_BACKEND_OUT_OF_MEMORY: memory taken outside the
 * pool; the pool then serves requests from its idle pages, asking the backend again only before it
 * fails a request they cannot serve, or after a trim; stats num_device_full). Over a block backend
 * (CUDA's memory pool): iff the request would pass the cap, or the backend refuses it even after
 * every stream's frees are waited for and its cache is given back;
 * NF_ERR_BACKEND iff a driver call fails otherwise.
 * O(1) block search (TLSF) plus O(pages mapped) for the pages touched; thread-safe.
 * For memory used inside a CUDA graph, use a pool of the graph's own with pin_pages: a graph
 * replays at the addresses it captured, also those of blocks freed during capture, which a pool
 * without it may back with other pages (the PyTorch front end makes such pools). */
nf_status nf_alloc(nf_pool *pool, size_t size, void *stream, void **ptr_out);

/* Frees a block. Its memory is reusable at once on `stream`, and on other streams once the work
 * every stream queued before this call has completed: a block may have been used on streams
 * never declared with nf_record_stream (with config.reuse_across_streams: at once, behind a
 * device-side wait for that work). NULL ptr is a no-op returning NF_OK.
 * Fails with NF_ERR_INVALID_POINTER iff ptr was never returned by this pool or points inside a
 * block; NF_ERR_DOUBLE_FREE iff the block is already free. A failed free changes nothing.
 * O(1) plus O(pages the block covers); thread-safe. */
nf_status nf_free(nf_pool *pool, void *ptr, void *stream);

/* Groups freed at once: nf_alloc_group is nf_alloc with a group number (not 0) on the block, and
 * nf_free_group frees every live block of a group in one call, as nf_free on `stream` would each:
 * a request's scratch in an inference engine, a phase's temporaries, what a step leaves behind.
 * A grouped block is otherwise an ordinary one (nf_free frees it alone). nf_alloc_group with group
 * 0 is nf_alloc. nf_free_group: *freed_out (may be NULL) receives the blocks freed; fails with
 * NF_ERR_INVALID_ARG iff pool is NULL or group is 0, NF_ERR_NO_MEMORY_HOST iff the group's list
 * cannot be made (nothing freed). O(blocks) for the group's list; thread-safe. */
nf_status nf_alloc_group(nf_pool *pool, size_t size, void *stream, uint64_t group, void **ptr_out);
nf_status nf_free_group(nf_pool *pool, uint64_t group, void *stream, uint64_t *freed_out);

/* Declares that the live block at ptr is also used by work on `stream` (PyTorch's record_stream):
 * when it is freed, no stream reuses it, and no page under it moves, until the work queued on every
 * such stream before the free has completed (with config.reuse_across_streams, a stream may reuse
 * it before, made to wait for that work on the device).
 * Fails with NF_ERR_INVALID_POINTER iff ptr is not a live block's start. O(1); thread-safe. */
nf_status nf_record_stream(nf_pool *pool, void *ptr, void *stream);

/*
 * Statistics: one list (NF_STATS_GAUGES / NF_STATS_COUNTERS) generates the struct, the text
 * printer and the JSON writer. Names follow PyTorch's memory_stats keys where the meaning matches.
 * A gauge carries current / peak / total (total sums every increase, like PyTorch's "allocated").
 */
typedef struct nf_gauge {
    uint64_t current;
    uint64_t peak;  /* never decreases, except through nf_stats_reset_peaks */
    uint64_t total; /* never decreases */
} nf_gauge;

/* X(name, description) */
#define NF_STATS_GAUGES(X)                                                                   \
    X(allocated_bytes, "bytes in live blocks (rounded to the alignment)")                  \
    X(reserved_bytes, "physical bytes held from the backend")                               \
    X(mapped_bytes, "virtual bytes backed by a mapping (a page mapped at two places: twice)") \
    X(idle_bytes, "physical bytes held on pages that hold no live block")                   \
    X(virtual_span_bytes, "bytes from the range's base to the end of the highest block used") \
    X(allocation, "live blocks")

#define NF_STATS_COUNTERS(X)                                                                 \
    X(num_allocs, "successful allocations")                                                 \
    X(num_frees, "successful frees")                                                        \
    X(num_alloc_failures, "allocations that failed for lack of memory")                     \
    X(num_invalid_frees, "frees rejected as invalid or double")                             \
    X(num_page_maps, "pages mapped")                                                        \
    X(num_page_unmaps, "pages unmapped")                                                    \
    X(num_remaps, "physical pages mapped at a new place after serving elsewhere")           \
    X(num_reclaims, "allocations served by idle physical pages from other places")          \
    X(num_device_full, "pages the backend could not create for lack of device memory")      \
    X(num_event_waits, "times the host had to wait for a stream's work to finish")          \
    X(num_steps, "training steps marked with nf_step_mark")                                 \
    X(calls_reserve, "backend calls: reserve a virtual range")                              \
    X(calls_unreserve, "backend calls: free a virtual range")                               \
    X(calls_page_create, "backend calls: create physical memory (one or more pages)")       \
    X(calls_page_release, "backend calls: release physical memory")                         \
    X(calls_map, "backend calls: map physical memory at a virtual range")                   \
    X(calls_unmap, "backend calls: unmap a virtual range")                                  \
    X(calls_set_access, "backend calls: set access on a mapped range")                      \
    X(calls_event_record, "backend calls: record an event on a stream")                     \
    X(calls_event_query, "backend calls: query an event")                                   \
    X(calls_event_sync, "backend calls: wait for an event")                                 \
    X(calls_event_release, "backend calls: destroy an event")                               \
    X(calls_stream_wait, "backend calls: order a stream after another's work, no host wait") \
    X(calls_block_alloc, "backend calls: allocate a block (block backends: CUDA memory pools)") \
    X(calls_block_free, "backend calls: free a block (block backends)")                      \
    X(calls_trim_to, "backend calls: give a block backend's cached memory back")             \
    X(backend_ns, "nanoseconds spent inside backend calls (host monotonic clock, waits included)") \
    X(event_wait_ns, "nanoseconds of backend_ns the host spent waiting for streams' work") \
    X(num_pairs_made, "physical pages made as pairs, two pages a handle (nf_config.pair_min_pages)")

#define NF_STATS_VERSION 5

typedef struct nf_stats {
    uint32_t size;    /* sizeof(nf_stats), set by nf_stats_get */
    uint32_t version; /* NF_STATS_VERSION */
#define NF_X_GAUGE(name, desc) nf_gauge name;
#define NF_X_COUNTER(name, desc) uint64_t name;
    NF_STATS_GAUGES(NF_X_GAUGE)
    NF_STATS_COUNTERS(NF_X_COUNTER)
#undef NF_X_GAUGE
#undef NF_X_COUNTER
    /* Derived when read: */
    uint64_t capacity_bytes;        /* the cap (0: none) */
    uint64_t granularity_bytes;     /* physical page size */
    uint64_t backend_calls;         /* sum of the calls_* counters */
    uint64_t largest_free_mapped_bytes; /* largest free range lying wholly on mapped pages */
    uint64_t free_mapped_bytes;     /* free bytes on mapped virtual pages */
    double overhead_ratio;          /* reserved_bytes.peak / allocated_bytes.peak (0 if none) */
    double fragmentation;           /* 1 - largest_free_mapped / free_mapped (0 if nothing free) */
} nf_stats;

/* Fills *stats. Fails with NF_ERR_INVALID_ARG iff pool or stats is NULL; over a block backend
 * (CUDA's memory pool) it first reads what the backend holds, and fails with NF_ERR_BACKEND iff
 * that read fails (*stats then has the figures as last read).
 * O(blocks + pages up to the highest page ever mapped) for the fragmentation figures (a few us on
 * a pool of a few hundred blocks), under the pool's lock; thread-safe. */
nf_status nf_stats_get(nf_pool *pool, nf_stats *stats);

/* Sets every gauge's peak to its current value (to measure a phase's peak). Statistics only: the
 * pool keeps its own record of the live peak for placement and growth, so resetting changes
 * nothing in how it behaves. O(1); thread-safe. */
nf_status nf_stats_reset_peaks(nf_pool *pool);

/* Writes the statistics as one JSON object (no newline) into buf, truncated to buf_size - 1 bytes
 * and always NUL-terminated; *needed_out (may be NULL) receives the full length. O(1). */
nf_status nf_stats_to_json(const nf_stats *stats, char *buf, size_t buf_size, size_t *needed_out);

/* Checks every invariant of the pool (see the equations in src/core/pool_internal.h).
 * Returns NF_OK, or NF_ERR_CORRUPT after logging the first broken invariant at NF_LOG_ERROR.
 * O(blocks + pages); thread-safe. Tests call it after every operation. */
nf_status nf_pool_check(nf_pool *pool);

typedef struct nf_block_info {
    uint64_t address;
    uint64_t size;
    bool live;
    uint64_t group;       /* a live block's nf_alloc_group group; 0: none */
    void *stream;         /* stream of the last alloc or free */
    uint32_t pages_mapped; /* pages the block overlaps that are mapped */
    uint32_t pages;        /* pages the block overlaps */
} nf_block_info;

/* Return non-zero to stop the walk. Called with the pool's lock held: must not call the pool. */
typedef int (*nf_walk_fn)(void *user, const nf_block_info *block);

/* Visits every block of the virtual range in address order (live and free, the trailing
 * never-used remainder included). O(blocks); thread-safe. */
nf_status nf_pool_walk(nf_pool *pool, nf_walk_fn visitor, void *user);

/* Releases idle physical memory until at most keep_bytes are held (or nothing idle is left):
 * idle pages are unmapped once no pending work can touch them, then released to the backend.
 * Over a block backend (CUDA's memory pool), the host first waits until every stream has reached
 * the frees queued on it (the driver gives back only memory whose free has run), then the backend
 * gives back its cache (cuMemPoolTrimTo).
 * *released_out (may be NULL) receives the bytes released; a pool with pin_pages releases
 * nothing. Fails with NF_ERR_BACKEND iff a driver call fails; what was released before that stays
 * released. O(pages); thread-safe. */
nf_status nf_trim(nf_pool *pool, uint64_t keep_bytes, uint64_t *released_out);

/* Lets device `device` (an ordinal; a negative one: every device) read and write this pool's
 * memory from now on, if it can access the pool's device as a peer, for a program that starts
 * using another device after the pool was made (a tensor copied to another GPU; the PyTorch
 * front end grants each device its process uses, as it makes that device's pool): the backend's
 * add_peers, then access granted again on every mapped page, one call per run of adjacent pages.
 * Grant only the devices that need it: every later mapping is made for each device granted.
 * Calling it again grants again. Fails with NF_ERR_UNSUPPORTED iff the backend has no peers to add
 * (the host backend); NF_ERR_BACKEND iff a driver call fails: every run is still tried, idle
 * pages of a failed run get access when a block next claims them, and live blocks keep the access
 * they had (their own device's). O(pages mapped); thread-safe. */
nf_status nf_pool_enable_peer_access(nf_pool *pool, int device);

/* Marks a training-step boundary: counts steps (num_steps), so per-step figures can be taken.
 * Once the host has had to wait for a stream's work, it also records each stream's event, a
 * quiet point that later waits can ask instead of waiting for the whole step (one backend call a
 * stream). Fails with NF_ERR_INVALID_ARG iff pool is NULL, NF_ERR_BACKEND iff recording fails
 * (the step is counted either way). O(streams); thread-safe. */
nf_status nf_step_mark(nf_pool *pool);

/*
 * Phases: a job's evaluation, a checkpoint save, a generation pass may raise its live peak above
 * the training steps' for a while. The pool grows with the highest live peak it has seen, so
 * after such a phase it would keep that phase's memory idle for the rest of the job, memory that
 * NCCL, another process or the next phase of another kind cannot have. nf_phase_mark records where
 * the pool stands at a quiet point before the phase; nf_phase_return, at the quiet point after it
 * (work of the phase finished or not: pages with pending work are waited for), gives back what the
 * pool holds above the mark, idle memory only, and makes the pool grow again as it did before
 * the phase (its live peak for growth goes back to the mark's, or to the live bytes now if more).
 * Statistics peaks are left alone. The PyTorch front end's `with nofrag.phase():` does both.
 */
typedef struct nf_phase {
    uint64_t held_bytes; /* physical memory held at the mark */
    uint64_t live_peak;  /* the live peak the pool grew with at the mark */
} nf_phase;

/* Fills *mark. NF_ERR_INVALID_ARG iff pool or mark is NULL. O(1); thread-safe. */
nf_status nf_phase_mark(nf_pool *pool, nf_phase *mark);

/* Returns the pool to the mark as far as live blocks allow, as described above; *released_out
 * (may be NULL) receives the bytes given back. A pool with pin_pages gives back nothing, and the
 * reserve stays. Fails as nf_trim does, and with NF_ERR_INVALID_ARG iff pool or mark is NULL.
 * O(pages); thread-safe. */
nf_status nf_phase_return(nf_pool *pool, const nf_phase *mark, uint64_t *released_out);

/* Changes the physical cap of a live pool, in whole pages rounded down like nf_config.capacity.
 * Lowering it below what is held trims idle pages; if live blocks still need more, the cap applies
 * to future growth. 0 removes the cap, but never beyond the reserved address space.
 * NF_ERR_INVALID_ARG for a cap under one page (or pool NULL). O(pages); thread-safe. */
nf_status nf_pool_set_capacity(nf_pool *pool, uint64_t capacity);

#pragma GCC visibility pop

#ifdef __cplusplus
}
#endif
#endif /* NOFRAG_H */
