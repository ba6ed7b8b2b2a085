/*
 * The backend interface: the small table of primitives the core needs from the memory system.
 * Backends of two kinds ship. Page backends give the core address space and physical pages, and
 * the core places every block: host (simulated device memory, optionally real host memory) and
 * CUDA virtual memory. Block backends place blocks themselves (NF_BACKEND_CAP_PLACES_BLOCKS: CUDA's
 * stream-ordered memory pools, and a host stand-in for tests); the core keeps the books, the cap,
 * groups, statistics and the checks around them. Each primitive returns 0 on success, or a
 * backend-specific non-zero code that `error_name` turns into text (the CUDA backends return
 * CUresult values).
 *
 * The core serialises calls per pool (it holds its lock), so a backend used by one pool needs no
 * locking of its own. Addresses and handles are plain integers so no backend type leaks out.
 */
#ifndef NOFRAG_BACKEND_H
#define NOFRAG_BACKEND_H

#include "nofrag.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Everything declared here is exported from the shared library, even when the library is built
 * with -fvisibility=hidden (which keeps internals out of `nm -g`). */
#pragma GCC visibility push(default)

enum {
    NF_BACKEND_CAP_EVENTS = 1u << 0,          /* event_* primitives order work across streams */
    NF_BACKEND_CAP_HOST_ACCESSIBLE = 1u << 1, /* mapped memory can be read and written by the CPU */
    NF_BACKEND_CAP_ALIASING = 1u << 2,        /* one physical page may be mapped at two places */
    NF_BACKEND_CAP_STREAM_WAIT = 1u << 3,     /* stream_wait orders one stream after another's event */
    /* A block backend: block_alloc, block_free, held_bytes and trim_to serve the pool; reserve,
     * unreserve, page_create, page_release, map, unmap and set_access are never called (may be
     * NULL), and granularity is only the unit the pool reports. */
    NF_BACKEND_CAP_PLACES_BLOCKS = 1u << 4,
};

/* What event_query returns when the event's work is still running. */
#define NF_BACKEND_EVENT_PENDING 1
/* What page_create returns when the memory system has no room for another page, though the
 * pool's cap is not reached (memory taken outside the pool: NCCL's buffers, another process).
 * The pool then takes the device as full: it serves requests from idle pages it holds, and fails
 * them with NF_ERR_OUT_OF_MEMORY only when none is left. 2 is CUDA_ERROR_OUT_OF_MEMORY. */
#define NF_BACKEND_OUT_OF_MEMORY 2

struct nf_backend {
    const char *name;
    uint32_t caps;        /* NF_BACKEND_CAP_* */
    uint64_t granularity; /* physical page size in bytes; a power of two */
    void *ctx;            /* passed to every primitive */

    /* Reserve `bytes` (a multiple of granularity) of address space, aligned to granularity.
     * post: *base_out != 0, nothing mapped in [base, base + bytes). */
    int (*reserve)(void *ctx, uint64_t bytes, uint64_t *base_out);
    /* pre: [base, base + bytes) came from reserve and nothing in it is mapped. */
    int (*unreserve)(void *ctx, uint64_t base, uint64_t bytes);
    /* Create physical memory of `pages` pages (pages * granularity bytes) as one handle.
     * post: *handle_out != 0. The handle is mapped, unmapped and released only as a whole. */
    int (*page_create)(void *ctx, uint64_t pages, uint64_t *handle_out);
    /* pre: the handle is mapped nowhere. */
    int (*page_release)(void *ctx, uint64_t handle);
    /* Map the whole handle, `pages` pages (its size), at va. pre: va is granularity-aligned and
     * [va, va + pages * granularity) lies inside a reservation and is unmapped. A handle may be
     * mapped at several places at once. */
    int (*map)(void *ctx, uint64_t va, uint64_t pages, uint64_t handle);
    /* Unmap the mappings in [va, va + pages * granularity). pre: that range is made of whole
     * mappings made by map, one after another (CUDA cannot unmap part of one, and unmaps several
     * adjacent ones in one call), and no pending work touches it. */
    int (*unmap)(void *ctx, uint64_t va, uint64_t pages);
    /* Grant read/write access to [va, va + pages * granularity) (to the owning device and peers).
     * pre: every page of the range is mapped; the range may span several mappings. */
    int (*set_access)(void *ctx, uint64_t va, uint64_t pages);
    /* Record an event covering all work queued on `stream` so far. *event_out == 0: into a new
     * event; otherwise *event_out is an event of this backend, not released, recorded again (what
     * it covered before no longer counts; waits already queued on it keep their old record).
     * post: *event_out != 0. */
    int (*event_record)(void *ctx, void *stream, uint64_t *event_out);
    /* 0 when the event's work has completed, NF_BACKEND_EVENT_PENDING when not, else an error. */
    int (*event_query)(void *ctx, uint64_t event);
    /* Block until the event's work has completed. */
    int (*event_sync)(void *ctx, uint64_t event);
    /* Make all work queued on `stream` from now on wait until the event's work has completed,
     * without blocking the caller (cuStreamWaitEvent). The event may be released right after.
     * Called only when caps has NF_BACKEND_CAP_STREAM_WAIT; may be NULL otherwise. */
    int (*stream_wait)(void *ctx, void *stream, uint64_t event);
    int (*event_release)(void *ctx, uint64_t event);
    /* Widen what set_access grants from now on to device `device` (an ordinal), or with
     * device < 0 to every device, if it can access this one's memory as a peer (a device that
     * cannot is left out: 0 all the same). Pages mapped before keep their old access until
     * set_access runs on them again (nf_pool_enable_peer_access does). NULL where the backend has
     * no peers. */
    int (*add_peers)(void *ctx, int device);

    /* Block backends only (NF_BACKEND_CAP_PLACES_BLOCKS). */
    /* Allocate `bytes` for work on `stream`, ordered on it: the memory may be memory freed by
     * block_free on this stream (reusable at once, in stream order) or, as the backend's own
     * dependency tracking allows, on others. NF_BACKEND_OUT_OF_MEMORY when the device has no room.
     * post: *addr_out != 0, aligned to 512 bytes at least. */
    int (*block_alloc)(void *ctx, uint64_t bytes, void *stream, uint64_t *addr_out);
    /* Free a block of block_alloc, ordered on `stream`: work queued there before it may still use
     * the block; the backend reuses it only after that work (stream-ordered free). */
    int (*block_free)(void *ctx, uint64_t addr, void *stream);
    /* Physical bytes the backend holds for the pool now: live blocks and what it keeps cached. */
    int (*held_bytes)(void *ctx, uint64_t *bytes_out);
    /* Give cached memory back to the device until at most keep_bytes are held (or nothing more
     * can go: memory of live blocks, or of frees whose work is still pending, stays). May wait
     * for the device (CUDA's pool: it synchronises first). */
    int (*trim_to)(void *ctx, uint64_t keep_bytes);

    /* Text for a code returned by any primitive above. Never NULL. */
    const char *(*error_name)(void *ctx, int code);
    /* Frees the backend itself (ctx and the table). Called by nf_backend_destroy. */
    void (*destroy)(struct nf_backend *self);
};

/* Destroys a backend made by one of the constructors below. NULL is a no-op. Call it after every
 * pool using the backend is destroyed. */
void nf_backend_destroy(nf_backend *backend);

/*
 * Host backend: device memory simulated on the host.
 *   real_memory = false: accounting only. Addresses are numbers in a fictitious range; nothing may
 *     be dereferenced. Fast: used by the trace replayer.
 *   real_memory = true: pages are memfd pages mapped with mmap(MAP_FIXED) into a PROT_NONE
 *     reservation, the same semantics as CUDA virtual memory, so blocks can be read and written.
 * Streams are any non-NULL tokens (NULL is the default stream). Work on a stream is simulated: see
 * nf_host_stream_submit / nf_host_stream_complete.
 * Fails with NF_ERR_INVALID_ARG iff backend_out is NULL or granularity is not a power of two
 * >= 4096 (0 selects 2 MiB); NF_ERR_NO_MEMORY_HOST iff the backend itself cannot be allocated.
 */
nf_status nf_backend_host_create(bool real_memory, uint64_t granularity, nf_backend **backend_out);

/* Simulates one kernel queued on `stream` in a host backend: events recorded from now on stay
 * pending until nf_host_stream_complete(stream). A stream_wait on the host backend holds back the
 * waiting stream's later kernels: completing them (nf_host_stream_complete, or an event_sync)
 * first completes the waited-for stream's work up to the event, as a GPU would run it. Fails with NF_ERR_INVALID_ARG on a non-host
 * backend. Not thread-safe against pool calls on pools using this backend. */
nf_status nf_host_stream_submit(nf_backend *backend, void *stream);
/* Simulates `stream` finishing all work queued so far. */
nf_status nf_host_stream_complete(nf_backend *backend, void *stream);
/* Simulates `stream` finishing its first `submissions` submissions (counted from its first
 * nf_host_stream_submit; more than were made means all), in stream order: a stream_wait queued
 * among them is met first by running the stream waited for up to its event. Already finished work
 * stays finished. The replayer's --stream-lag runs each stream this way, behind the host. */
nf_status nf_host_stream_complete_upto(nf_backend *backend, void *stream, uint64_t submissions);
/* Called whenever a simulated stream's completed work advances (nf_host_stream_complete, or the
 * pool waiting on an event): tests run their deferred "kernels" there. completed counts the
 * submissions on that stream that have now finished. */
typedef void (*nf_host_completion_fn)(void *user, void *stream, uint64_t completed);
nf_status nf_host_set_completion_hook(nf_backend *backend, nf_host_completion_fn fn, void *user);
/* Whether every physical allocation handed out by this host backend has been released and the range freed. */
bool nf_host_all_released(nf_backend *backend);

/*
 * CUDA virtual-memory backend (src/backends/backend_cuda.c): the driver API is loaded at run time
 * from libcuda.so.1, so this builds and links on machines without a GPU or CUDA toolkit.
 * peer_access: also grant access to every device that can access `device`'s memory as a peer.
 * Fails with NF_ERR_UNSUPPORTED iff the library was built without CUDA headers, libcuda.so.1 is
 * missing, or the device lacks virtual memory management; NF_ERR_BACKEND iff a driver call fails
 * (the message, naming the call, goes to log when given).
 */
nf_status nf_backend_cuda_create(int device, bool peer_access, nf_log_fn log, void *log_user,
                                 nf_backend **backend_out);

/*
 * CUDA stream-ordered memory-pool backend (src/backends/backend_cuda.c): a block backend over a
 * memory pool of the device's own (cuMemPoolCreate; cuMemAllocFromPoolAsync, cuMemFreeAsync), its
 * release threshold set to keep freed memory cached until a trim (cuMemPoolTrimTo), as PyTorch's
 * cudaMallocAsync backend does. The driver places blocks, so there are no page moves to count and
 * no placement policy: for jobs that want CUDA's own pool with nofrag's cap, groups, statistics and
 * reports, and to measure what CUDA's pool holds on a trace (`nofrag replay --backend cuda-pool`).
 * Same arguments and failures as nf_backend_cuda_create; NF_ERR_UNSUPPORTED also iff the device
 * lacks memory pools.
 */
nf_status nf_backend_cuda_pool_create(int device, bool peer_access, nf_log_fn log, void *log_user,
                                      nf_backend **backend_out);

/*
 * Host block backend (src/backends/backend_host_pool.c): a stand-in for a stream-ordered pool in
 * real host memory, for tests and for C programs without a GPU. Freed blocks stay cached and serve
 * later requests of at most their size (a cached block serves whole: a simple model of a caching
 * pool's own waste); trim_to frees cached blocks, largest first. With device_bytes != 0, a request
 * that no cached block serves fails with NF_BACKEND_OUT_OF_MEMORY when held memory would pass it.
 * Streams are tokens: a free is reusable at once. Fails with NF_ERR_INVALID_ARG iff backend_out is
 * NULL, NF_ERR_NO_MEMORY_HOST iff the backend cannot be allocated.
 */
nf_status nf_backend_host_pool_create(uint64_t device_bytes, nf_backend **backend_out);

/* Free and total device memory of `device` in bytes, through the same run-time loaded driver.
 * Same failures as nf_backend_cuda_create. */
nf_status nf_cuda_mem_info(int device, uint64_t *free_out, uint64_t *total_out);

#pragma GCC visibility pop

#ifdef __cplusplus
}
#endif
#endif /* NOFRAG_BACKEND_H */
