/*
 * Host backend: device memory simulated on the CPU, with CUDA virtual memory's semantics.
 *
 * Accounting mode hands out numbers; real-memory mode backs each physical page with a piece of
 * one memfd and maps it with mmap(MAP_FIXED) into a PROT_NONE reservation, so a page's contents
 * follow the page wherever it is mapped, exactly as a cuMemCreate handle does. A freshly mapped page
 * stays PROT_NONE until set_access, as on CUDA, so a missing set_access faults in tests.
 *
 * Both modes check every precondition of nofrag_backend.h and fail a call that breaks one, so
 * the core's tests catch a wrong unmap or double map even without real memory.
 * Streams and events are simulated: each stream counts kernels submitted and completed, and a
 * stream_wait holds the waiting stream's later kernels back until the other stream reaches the event.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "nofrag_backend.h"

enum {
    HOST_ERR_PRECONDITION = 1000, /* a primitive's precondition was broken: a bug in the caller */
    HOST_ERR_NO_MEMORY,
    HOST_ERR_SYSTEM, /* mmap / memfd failed; errno in last_errno */
};

/* One physical allocation (a handle): `pages` pages, mapped only as a whole. */
typedef struct host_handle {
    uint64_t pages;
    uint64_t memfd_page;   /* real mode: its first page in the memfd */
    uint64_t region_pages; /* real mode: memfd pages reserved for the slot (>= pages) */
    uint32_t mappings;     /* virtual places it is mapped at (CUDA allows several) */
    uint8_t in_use;        /* created and not released */
} host_handle;

/* A stream's wait for another stream's event (stream_wait): the waiting stream's submissions after
 * `after` complete only once the other stream has completed `seq` submissions and its first `waits`
 * waits are met, as on CUDA, where work queued after cuStreamWaitEvent starts after the event. */
typedef struct host_wait {
    uint64_t after;  /* submissions on the waiting stream queued before the wait */
    uint32_t stream; /* the stream waited for (index into streams) */
    uint64_t seq;    /* its submissions the event covers */
    uint64_t waits;  /* its waits queued before the event */
} host_wait;

typedef struct host_stream {
    void *stream;
    uint64_t submitted;
    uint64_t completed;
    /* Waits numbered from 0 in the order queued: waits[i - wait_base] is wait number i, for
     * wait_base <= i < wait_base + wait_count; those below waits_done are met. */
    host_wait *waits;
    uint64_t wait_base, wait_count, wait_capacity, waits_done;
} host_stream;

typedef struct host_event {
    uint32_t stream; /* index into streams */
    uint64_t seq;    /* done when streams[stream].completed >= seq ... */
    uint64_t waits;  /* ... and the stream's first `waits` waits are met */
    uint8_t in_use;
} host_event;

typedef struct host_reservation {
    uint64_t base;
    uint64_t bytes;
    uint64_t *handles; /* per page of the reservation: handle mapped there, 0 if none */
    uint64_t *offset;  /* per mapped page: its index within its mapping (0: the mapping's start) */
    uint8_t *access;   /* per page: set_access done since the map */
    void *mapping;     /* real mode: the mmap'ed region (base rounded) */
    uint64_t mapping_bytes;
} host_reservation;

typedef struct host_ctx {
    bool real;
    uint64_t gran;
    int memfd;
    uint64_t memfd_pages;
    host_handle *allocs; /* physical allocations: handle h is allocs[h - 1] */
    uint64_t alloc_count, alloc_capacity;
    uint64_t *free_handles;
    uint64_t free_count, free_capacity;
    host_reservation *res;
    uint32_t res_count, res_capacity;
    uint64_t next_fake_base;
    host_stream *streams;
    uint32_t stream_count, stream_capacity;
    host_event *events;
    uint64_t event_count, event_capacity;
    int last_errno;
    nf_host_completion_fn on_complete;
    void *on_complete_user;
} host_ctx;

static bool grow(void **array, uint64_t *capacity, uint64_t need, size_t elem) {
    if (need <= *capacity) return true;
    uint64_t cap = *capacity ? *capacity * 2 : 16;
    while (cap < need) cap *= 2;
    void *grown = realloc(*array, cap * elem);
    if (!grown) return false;
    memset((char *)grown + *capacity * elem, 0, (cap - *capacity) * elem);
    *array = grown;
    *capacity = cap;
    return true;
}

static host_reservation *find_res(host_ctx *h, uint64_t va) {
    for (uint32_t i = 0; i < h->res_count; i++)
        if (va >= h->res[i].base && va < h->res[i].base + h->res[i].bytes) return &h->res[i];
    return NULL;
}

static int host_reserve(void *ctx, uint64_t bytes, uint64_t *base_out) {
    host_ctx *h = ctx;
    if (!bytes || bytes % h->gran) return HOST_ERR_PRECONDITION;
    uint64_t cap32 = h->res_capacity;
    if (!grow((void **)&h->res, &cap32, h->res_count + 1, sizeof *h->res)) return HOST_ERR_NO_MEMORY;
    h->res_capacity = (uint32_t)cap32;
    host_reservation *r = &h->res[h->res_count];
    memset(r, 0, sizeof *r);
    r->bytes = bytes;
    r->handles = calloc(bytes / h->gran, sizeof *r->handles);
    r->offset = calloc(bytes / h->gran, sizeof *r->offset);
    r->access = calloc(bytes / h->gran, 1);
    if (!r->handles || !r->offset || !r->access) {
        free(r->handles);
        free(r->offset);
        free(r->access);
        return HOST_ERR_NO_MEMORY;
    }
    if (h->real) {
        r->mapping_bytes = bytes + h->gran;
        r->mapping = mmap(NULL, r->mapping_bytes, PROT_NONE,
                          MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
        if (r->mapping == MAP_FAILED) {
            h->last_errno = errno;
            free(r->handles);
            free(r->offset);
            free(r->access);
            return HOST_ERR_SYSTEM;
        }
        r->base = ((uint64_t)(uintptr_t)r->mapping + h->gran - 1) & ~(h->gran - 1);
    } else {
        /* Fictitious addresses, far apart, aligned, never 0. */
        if (!h->next_fake_base) h->next_fake_base = 1ull << 44;
        r->base = h->next_fake_base;
        h->next_fake_base += (bytes + (1ull << 40)) & ~(h->gran - 1);
    }
    h->res_count++;
    *base_out = r->base;
    return 0;
}

static int host_unreserve(void *ctx, uint64_t base, uint64_t bytes) {
    host_ctx *h = ctx;
    for (uint32_t i = 0; i < h->res_count; i++) {
        host_reservation *r = &h->res[i];
        if (r->base != base || r->bytes != bytes) continue;
        for (uint64_t p = 0; p < bytes / h->gran; p++)
            if (r->handles[p]) return HOST_ERR_PRECONDITION; /* still mapped */
        if (h->real) munmap(r->mapping, r->mapping_bytes);
        free(r->handles);
        free(r->offset);
        free(r->access);
        h->res[i] = h->res[--h->res_count];
        return 0;
    }
    return HOST_ERR_PRECONDITION;
}

/* Puts a handle slot on the list for reuse; false if the list cannot grow. */
static bool free_handle_push(host_ctx *h, uint64_t handle) {
    if (!grow((void **)&h->free_handles, &h->free_capacity, h->free_count + 1, sizeof *h->free_handles))
        return false;
    h->free_handles[h->free_count++] = handle;
    return true;
}

static int host_page_create(void *ctx, uint64_t pages, uint64_t *handle_out) {
    host_ctx *h = ctx;
    if (pages == 0) return HOST_ERR_PRECONDITION;
    uint64_t handle;
    if (h->free_count) {
        handle = h->free_handles[--h->free_count];
    } else {
        if (!grow((void **)&h->allocs, &h->alloc_capacity, h->alloc_count + 1, sizeof *h->allocs))
            return HOST_ERR_NO_MEMORY;
        handle = ++h->alloc_count;
        h->allocs[handle - 1].region_pages = 0;
    }
    host_handle *hp = &h->allocs[handle - 1];
    if (h->real && hp->region_pages < pages) {
        /* A fresh piece of the memfd: the slot's old piece (a hole since its release) is too small. */
        if (ftruncate(h->memfd, (off_t)((h->memfd_pages + pages) * h->gran)) != 0) {
            h->last_errno = errno;
            return free_handle_push(h, handle) ? HOST_ERR_SYSTEM : HOST_ERR_NO_MEMORY;
        }
        hp->memfd_page = h->memfd_pages;
        hp->region_pages = pages;
        h->memfd_pages += pages;
    }
    hp->pages = pages;
    hp->in_use = 1;
    hp->mappings = 0;
    *handle_out = handle;
    return 0;
}

static bool handle_valid(host_ctx *h, uint64_t handle) {
    return handle >= 1 && handle <= h->alloc_count && h->allocs[handle - 1].in_use;
}

static int host_page_release(void *ctx, uint64_t handle) {
    host_ctx *h = ctx;
    if (!handle_valid(h, handle) || h->allocs[handle - 1].mappings) return HOST_ERR_PRECONDITION;
    host_handle *hp = &h->allocs[handle - 1];
    hp->in_use = 0;
    if (h->real) /* give the memory back to the system, as cuMemRelease does */
        fallocate(h->memfd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, (off_t)(hp->memfd_page * h->gran),
                  (off_t)(hp->region_pages * h->gran));
    free_handle_push(h, handle); /* on failure the handle is simply not reused */
    return 0;
}

/* The reservation holding all of [va, va + pages * gran), with *first_out its first page's index;
 * NULL if none does or va is not page-aligned. */
static host_reservation *find_range(host_ctx *h, uint64_t va, uint64_t pages, uint64_t *first_out) {
    host_reservation *r = find_res(h, va);
    if (!r || va % h->gran || pages == 0) return NULL;
    uint64_t first = (va - r->base) / h->gran;
    if (pages > r->bytes / h->gran - first) return NULL;
    *first_out = first;
    return r;
}

static int host_map(void *ctx, uint64_t va, uint64_t pages, uint64_t handle) {
    host_ctx *h = ctx;
    uint64_t first;
    host_reservation *r = find_range(h, va, pages, &first);
    /* CUDA maps a handle only whole (cuMemMap: CUDA_ERROR_NOT_SUPPORTED for part of one). */
    if (!r || !handle_valid(h, handle) || h->allocs[handle - 1].pages != pages) return HOST_ERR_PRECONDITION;
    for (uint64_t i = 0; i < pages; i++)
        if (r->handles[first + i]) return HOST_ERR_PRECONDITION;
    if (h->real) {
        void *at = mmap((void *)(uintptr_t)va, pages * h->gran, PROT_NONE, MAP_SHARED | MAP_FIXED, h->memfd,
                        (off_t)(h->allocs[handle - 1].memfd_page * h->gran));
        if (at == MAP_FAILED) {
            h->last_errno = errno;
            return HOST_ERR_SYSTEM;
        }
    }
    for (uint64_t i = 0; i < pages; i++) {
        r->handles[first + i] = handle;
        r->offset[first + i] = i;
        r->access[first + i] = 0;
    }
    h->allocs[handle - 1].mappings++;
    return 0;
}

static int host_unmap(void *ctx, uint64_t va, uint64_t pages) {
    host_ctx *h = ctx;
    uint64_t first;
    host_reservation *r = find_range(h, va, pages, &first);
    if (!r) return HOST_ERR_PRECONDITION;
    /* Whole mappings, one after another: CUDA cannot unmap part of one, and unmaps several
     * adjacent ones in one call (gpu/vmm_cost.cu). */
    for (uint64_t i = 0; i < pages;) {
        uint64_t handle = r->handles[first + i];
        if (!handle || r->offset[first + i] != 0 || h->allocs[handle - 1].pages > pages - i)
            return HOST_ERR_PRECONDITION;
        i += h->allocs[handle - 1].pages;
    }
    if (h->real) {
        /* Put the reservation back over the range. */
        void *at = mmap((void *)(uintptr_t)va, pages * h->gran, PROT_NONE,
                        MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED | MAP_NORESERVE, -1, 0);
        if (at == MAP_FAILED) {
            h->last_errno = errno;
            return HOST_ERR_SYSTEM;
        }
    }
    for (uint64_t i = 0; i < pages; i++) {
        if (r->offset[first + i] == 0) h->allocs[r->handles[first + i] - 1].mappings--;
        r->handles[first + i] = 0;
        r->access[first + i] = 0;
    }
    return 0;
}

static int host_set_access(void *ctx, uint64_t va, uint64_t pages) {
    host_ctx *h = ctx;
    uint64_t first;
    host_reservation *r = find_range(h, va, pages, &first);
    if (!r) return HOST_ERR_PRECONDITION;
    for (uint64_t i = 0; i < pages; i++)
        if (!r->handles[first + i]) return HOST_ERR_PRECONDITION;
    if (h->real && mprotect((void *)(uintptr_t)va, pages * h->gran, PROT_READ | PROT_WRITE) != 0) {
        h->last_errno = errno;
        return HOST_ERR_SYSTEM;
    }
    memset(r->access + first, 1, pages);
    return 0;
}

static host_event *event_get(host_ctx *h, uint64_t event) {
    if (event < 1 || event > h->event_count || !h->events[event - 1].in_use) return NULL;
    return &h->events[event - 1];
}

static int stream_find(host_ctx *h, void *stream, bool add, uint32_t *idx_out) {
    for (uint32_t i = 0; i < h->stream_count; i++)
        if (h->streams[i].stream == stream) {
            *idx_out = i;
            return 0;
        }
    if (!add) return HOST_ERR_PRECONDITION;
    uint64_t cap = h->stream_capacity;
    if (!grow((void **)&h->streams, &cap, h->stream_count + 1, sizeof *h->streams))
        return HOST_ERR_NO_MEMORY;
    h->stream_capacity = (uint32_t)cap;
    h->streams[h->stream_count].stream = stream;
    *idx_out = h->stream_count++;
    return 0;
}

static int host_event_record(void *ctx, void *stream, uint64_t *event_out) {
    host_ctx *h = ctx;
    uint32_t s;
    if (*event_out && !event_get(h, *event_out)) return HOST_ERR_PRECONDITION;
    int rc = stream_find(h, stream, true, &s);
    if (rc) return rc;
    uint64_t e;
    if (*event_out) e = *event_out - 1; /* recorded again */
    else
        for (e = 0; e < h->event_count && h->events[e].in_use; e++) {
        }
    if (e == h->event_count) {
        if (!grow((void **)&h->events, &h->event_capacity, h->event_count + 1, sizeof *h->events))
            return HOST_ERR_NO_MEMORY;
        h->event_count++;
    }
    host_stream *st = &h->streams[s];
    h->events[e].in_use = 1;
    h->events[e].stream = s;
    h->events[e].seq = st->submitted;
    h->events[e].waits = st->wait_base + st->wait_count;
    *event_out = e + 1;
    return 0;
}

/* Whether stream s has completed `seq` submissions and met its first `waits` waits. */
static bool stream_reached(const host_ctx *h, uint32_t s, uint64_t seq, uint64_t waits) {
    const host_stream *st = &h->streams[s];
    if (st->completed < seq) return false;
    for (uint64_t i = st->waits_done; i < waits; i++) {
        const host_wait *w = &st->waits[i - st->wait_base];
        if (!stream_reached(h, w->stream, w->seq, w->waits)) return false;
    }
    return true;
}

static void stream_complete_to(host_ctx *h, uint32_t s, uint64_t seq) {
    host_stream *st = &h->streams[s];
    if (st->completed >= seq) return;
    st->completed = seq;
    if (h->on_complete) h->on_complete(h->on_complete_user, st->stream, st->completed);
}

/* Runs stream s's queued work until it has completed `seq` submissions and met its first `waits`
 * waits, in stream order: before each wait is met, the submissions queued ahead of it complete,
 * then the stream waited for runs up to its event. An event never names a wait queued after it,
 * so the recursion only goes back in time. */
static void stream_advance(host_ctx *h, uint32_t s, uint64_t seq, uint64_t waits) {
    host_stream *st = &h->streams[s];
    while (st->waits_done < st->wait_base + st->wait_count &&
           (st->waits_done < waits || st->waits[st->waits_done - st->wait_base].after < seq)) {
        host_wait w = st->waits[st->waits_done - st->wait_base];
        st->waits_done++;
        stream_complete_to(h, s, w.after);
        stream_advance(h, w.stream, w.seq, w.waits);
        st = &h->streams[s];
    }
    if (st->waits_done == st->wait_base + st->wait_count) { /* all met: the list starts over */
        st->wait_base = st->waits_done;
        st->wait_count = 0;
    }
    stream_complete_to(h, s, seq);
}

static int host_event_query(void *ctx, uint64_t event) {
    host_ctx *h = ctx;
    host_event *e = event_get(h, event);
    if (!e) return HOST_ERR_PRECONDITION;
    return stream_reached(h, e->stream, e->seq, e->waits) ? 0 : NF_BACKEND_EVENT_PENDING;
}

static int host_event_sync(void *ctx, uint64_t event) {
    host_ctx *h = ctx;
    host_event *e = event_get(h, event);
    if (!e) return HOST_ERR_PRECONDITION;
    /* Waiting runs the stream's queued work up to the event (and what it waits for). */
    stream_advance(h, e->stream, e->seq, e->waits);
    return 0;
}

static int host_stream_wait(void *ctx, void *stream, uint64_t event) {
    host_ctx *h = ctx;
    host_event *e = event_get(h, event);
    if (!e) return HOST_ERR_PRECONDITION;
    host_event target = *e; /* stream_find may move the streams, not the events */
    uint32_t s;
    int rc = stream_find(h, stream, true, &s);
    if (rc) return rc;
    if (stream_reached(h, target.stream, target.seq, target.waits)) return 0; /* nothing to wait for */
    host_stream *st = &h->streams[s];
    if (!grow((void **)&st->waits, &st->wait_capacity, st->wait_count + 1, sizeof *st->waits))
        return HOST_ERR_NO_MEMORY;
    st->waits[st->wait_count++] = (host_wait){st->submitted, target.stream, target.seq, target.waits};
    return 0;
}

static int host_event_release(void *ctx, uint64_t event) {
    host_ctx *h = ctx;
    host_event *e = event_get(h, event);
    if (!e) return HOST_ERR_PRECONDITION;
    e->in_use = 0;
    return 0;
}

static const char *host_error_name(void *ctx, int code) {
    host_ctx *h = ctx;
    switch (code) {
    case 0: return "success";
    case NF_BACKEND_EVENT_PENDING: return "event pending";
    case HOST_ERR_PRECONDITION: return "precondition broken (caller bug)";
    case HOST_ERR_NO_MEMORY: return "out of host memory";
    case HOST_ERR_SYSTEM: return strerror(h->last_errno);
    }
    return "unknown host backend error";
}

static void host_destroy(nf_backend *self) {
    host_ctx *h = self->ctx;
    for (uint32_t i = 0; i < h->res_count; i++) {
        if (h->real) munmap(h->res[i].mapping, h->res[i].mapping_bytes);
        free(h->res[i].handles);
        free(h->res[i].offset);
        free(h->res[i].access);
    }
    if (h->real && h->memfd >= 0) close(h->memfd);
    free(h->res);
    free(h->allocs);
    free(h->free_handles);
    for (uint32_t i = 0; i < h->stream_count; i++) free(h->streams[i].waits);
    free(h->streams);
    free(h->events);
    free(h);
    free(self);
}

nf_status nf_backend_host_create(bool real_memory, uint64_t granularity, nf_backend **backend_out) {
    if (!backend_out) return NF_ERR_INVALID_ARG;
    *backend_out = NULL;
    if (granularity == 0) granularity = 2ull << 20;
    if (granularity < 4096 || (granularity & (granularity - 1))) return NF_ERR_INVALID_ARG;
    nf_backend *b = calloc(1, sizeof *b);
    host_ctx *h = calloc(1, sizeof *h);
    if (!b || !h) {
        free(b);
        free(h);
        return NF_ERR_NO_MEMORY_HOST;
    }
    h->real = real_memory;
    h->gran = granularity;
    h->memfd = -1;
    if (real_memory) {
        h->memfd = memfd_create("nofrag-host", MFD_CLOEXEC);
        if (h->memfd < 0) {
            free(b);
            free(h);
            return NF_ERR_UNSUPPORTED;
        }
    }
    b->name = real_memory ? "host(real memory)" : "host(accounting)";
    b->caps = NF_BACKEND_CAP_EVENTS | (real_memory ? NF_BACKEND_CAP_HOST_ACCESSIBLE : 0) |
              NF_BACKEND_CAP_ALIASING | NF_BACKEND_CAP_STREAM_WAIT;
    b->granularity = granularity;
    b->ctx = h;
    b->reserve = host_reserve;
    b->unreserve = host_unreserve;
    b->page_create = host_page_create;
    b->page_release = host_page_release;
    b->map = host_map;
    b->unmap = host_unmap;
    b->set_access = host_set_access;
    b->event_record = host_event_record;
    b->event_query = host_event_query;
    b->event_sync = host_event_sync;
    b->stream_wait = host_stream_wait;
    b->event_release = host_event_release;
    b->error_name = host_error_name;
    b->destroy = host_destroy;
    *backend_out = b;
    return NF_OK;
}

void nf_backend_destroy(nf_backend *backend) {
    if (backend && backend->destroy) backend->destroy(backend);
}

static host_ctx *as_host(nf_backend *backend) {
    return backend && backend->destroy == host_destroy ? backend->ctx : NULL;
}

nf_status nf_host_stream_submit(nf_backend *backend, void *stream) {
    host_ctx *h = as_host(backend);
    uint32_t s;
    if (!h) return NF_ERR_INVALID_ARG;
    if (stream_find(h, stream, true, &s)) return NF_ERR_NO_MEMORY_HOST;
    h->streams[s].submitted++;
    return NF_OK;
}

nf_status nf_host_stream_complete(nf_backend *backend, void *stream) {
    host_ctx *h = as_host(backend);
    uint32_t s;
    if (!h) return NF_ERR_INVALID_ARG;
    if (stream_find(h, stream, true, &s)) return NF_ERR_NO_MEMORY_HOST;
    stream_advance(h, s, h->streams[s].submitted, h->streams[s].wait_base + h->streams[s].wait_count);
    return NF_OK;
}

nf_status nf_host_stream_complete_upto(nf_backend *backend, void *stream, uint64_t submissions) {
    host_ctx *h = as_host(backend);
    uint32_t s;
    if (!h) return NF_ERR_INVALID_ARG;
    if (stream_find(h, stream, true, &s)) return NF_ERR_NO_MEMORY_HOST;
    host_stream *st = &h->streams[s];
    if (submissions > st->submitted) submissions = st->submitted;
    /* Waits queued before those submissions are met on the way (stream_advance's `after < seq`). */
    stream_advance(h, s, submissions, 0);
    return NF_OK;
}

nf_status nf_host_set_completion_hook(nf_backend *backend, nf_host_completion_fn fn, void *user) {
    host_ctx *h = as_host(backend);
    if (!h) return NF_ERR_INVALID_ARG;
    h->on_complete = fn;
    h->on_complete_user = user;
    return NF_OK;
}

bool nf_host_all_released(nf_backend *backend) {
    host_ctx *h = as_host(backend);
    if (!h || h->res_count) return false;
    for (uint64_t i = 0; i < h->alloc_count; i++)
        if (h->allocs[i].in_use) return false;
    return true;
}
