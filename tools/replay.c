#include "replay.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "nofrag_backend.h"

/* Microseconds per call (docs/cost-model.md). Map is 1.9 us fresh, 1.0 us when the page comes from
 * another place: the remap discount is applied per remap. A set-access call costs 42.6 us for the
 * first mapping it covers and 32.6 us for each further one (every map call makes one mapping, and
 * each mapping is given access once). Unmap is charged per mapping unmapped, whatever the number
 * of calls: on the GPU one call over 4-64 one-page mappings took as long as one call each, back to
 * back (gpu/vmm_cost.cu). Unreserve and the event calls were not measured; they are charged as
 * noted there. */
static const double COST_RESERVE = 44.0, COST_UNRESERVE = 44.0, COST_PAGE_CREATE = 19.5,
                    COST_PAGE_RELEASE = 39.8, COST_MAP = 1.9, COST_REMAP_DISCOUNT = 0.9,
                    COST_UNMAP = 22.8, COST_SET_ACCESS = 42.6, COST_SET_ACCESS_MORE = 32.6,
                    COST_EVENT_CALL = 2.0;

/* Extra microseconds per call for each 2 MiB of a page beyond the first (gpu/vmm_cost.cu on an
 * H200: from 1 to 256 pages in one handle or mapping, create +0.13, set-access +0.1 per mapping,
 * unmap +0.03, release +0.95; map did not change). */
static const double COST_CREATE_PER_2M = 0.13, COST_SET_ACCESS_PER_2M = 0.1, COST_UNMAP_PER_2M = 0.03,
                    COST_RELEASE_PER_2M = 0.95;

double replay_cost_us(const nf_stats *d) {
    double extra = d->granularity_bytes > (2u << 20) ? (double)(d->granularity_bytes >> 21) - 1.0 : 0.0;
    return extra * (COST_CREATE_PER_2M * (double)d->calls_page_create +
                    COST_SET_ACCESS_PER_2M * (double)d->calls_map +
                    COST_UNMAP_PER_2M * (double)d->num_page_unmaps +
                    COST_RELEASE_PER_2M * (double)d->calls_page_release) +
           COST_RESERVE * (double)d->calls_reserve + COST_UNRESERVE * (double)d->calls_unreserve +
           COST_PAGE_CREATE * (double)d->calls_page_create +
           COST_PAGE_RELEASE * (double)d->calls_page_release + COST_MAP * (double)d->calls_map -
           COST_REMAP_DISCOUNT * (double)d->num_remaps + COST_UNMAP * (double)d->num_page_unmaps +
           COST_SET_ACCESS * (double)d->calls_set_access +
           COST_SET_ACCESS_MORE * (double)(d->calls_map > d->calls_set_access ? d->calls_map - d->calls_set_access : 0) +
           COST_EVENT_CALL * (double)(d->calls_event_record + d->calls_event_query +
                                      d->calls_event_sync + d->calls_event_release + d->calls_stream_wait);
}

static nf_stats stats_delta(const nf_stats *end, const nf_stats *start) {
    nf_stats d = *end;
#define NF_X_DELTA(name, desc) d.name = end->name - start->name;
    NF_STATS_COUNTERS(NF_X_DELTA)
#undef NF_X_DELTA
    d.backend_calls = end->backend_calls - start->backend_calls;
    return d;
}

static double now_seconds(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

void replay_result_free(replay_result *r) {
    free(r->steps);
    r->steps = NULL;
    r->step_slots = 0;
}

/* Charges the counters since *last to step slot `slot` and moves *last to now. */
static void per_step_close(nf_pool *pool, replay_result *r, uint32_t slot, nf_stats *last) {
    nf_stats now;
    nf_stats_get(pool, &now);
    nf_stats d = stats_delta(&now, last);
    r->steps[slot] = (replay_step){d.backend_calls, d.num_remaps, replay_cost_us(&d), now.allocated_bytes.peak};
    *last = now;
}

/* nf_pool_walk visitor: the first block's address (the range's base), then stop. */
static int first_block_address(void *user, const nf_block_info *b) {
    *(uint64_t *)user = b->address;
    return 1;
}

/* On the host backend a stream is any token: the trace's own values. On CUDA a stream must be a
 * live handle, and the recorded ones belonged to the recording process (passing one to the driver
 * crashes it). The replay queues no work, so any distinct valid handles will do: the default
 * stream, then CUDA's two special handles (CU_STREAM_LEGACY, CU_STREAM_PER_THREAD). */
static void *const cuda_streams[] = {NULL, (void *)(uintptr_t)0x1, (void *)(uintptr_t)0x2};
enum { CUDA_STREAMS = sizeof cuda_streams / sizeof cuda_streams[0] };

/* --stream-lag's ring: the stream of an event and how many kernels it had queued by then. */
typedef struct lag_entry {
    uint32_t stream;
    uint64_t queued;
} lag_entry;

/* Before event i (on trace stream `stream`): the event stream_lag events back completes its
 * stream's work up to what was queued then, and one kernel is queued on this event's stream. */
static nf_status lag_advance(nf_backend *backend, void **streams, lag_entry *ring, uint64_t *queued, uint64_t lag,
                             uint64_t i, uint32_t stream) {
    lag_entry *slot = &ring[i % lag];
    nf_status s = NF_OK;
    if (i >= lag) s = nf_host_stream_complete_upto(backend, streams[slot->stream], slot->queued);
    if (s == NF_OK) s = nf_host_stream_submit(backend, streams[stream]);
    *slot = (lag_entry){stream, ++queued[stream]};
    return s;
}

/* --real-memory: each block's tags, one word per page it covers (see replay_options.real_memory),
 * each a value no other block or position shares. A page moved or unmapped under a live block, or
 * a physical page shared by two live blocks, changes a tag. */
static uint64_t tag_value(uint64_t serial, uint64_t addr) {
    uint64_t x = serial * 0x9e3779b97f4a7c15ull ^ addr * 0xc2b2ae3d27d4eb4full;
    return x ^ (x >> 29);
}

/* Runs body with `word` at every tag position of [addr, addr + size): the first word, the first
 * word of every later page, the last word. */
#define FOR_EACH_TAG(addr, size, page, word, body)                                             \
    do {                                                                                         \
        uint64_t end_ = (addr) + (size) - 8, word = (addr);                                     \
        body;                                                                                    \
        for (word = ((addr) / (page) + 1) * (page); word < end_; word += (page)) body;          \
        if (end_ > (addr)) { word = end_; body; }                                                \
    } while (0)

/* With --stream-lag, a block's tags are written by a simulated kernel queued on its stream right
 * after the allocation, and checked by the kernel its free event queued before the free, each
 * when its stream reaches it (the backend's completion hook), as a GPU would run them: so a block
 * handed to another stream before the old owner's work is done (a fence the pool did not keep)
 * shows as a changed tag. A check that runs before its block's write (a block used across
 * streams the trace does not order) is skipped and counted. Without a lag both run at once. */
typedef struct tag_item {
    uint64_t count; /* the stream's submission that runs it */
    uint64_t addr, size, serial;
    bool check;     /* else a write */
} tag_item;

typedef struct tag_queue {
    tag_item *items;
    size_t head, len, cap;
} tag_queue;

typedef struct tag_checker {
    uint64_t page;
    uint64_t *serial, *size; /* per trace slot: the live block's serial (event number + 1) and size */
    bool *written;           /* per serial: its tags are in memory */
    tag_queue *queues;       /* per trace stream, with a lag */
    void **streams;
    uint32_t stream_count;
    replay_result *r;
} tag_checker;

static void tags_run(tag_checker *tc, const tag_item *it) {
    if (!it->check) {
        FOR_EACH_TAG(it->addr, it->size, tc->page, w, *(volatile uint64_t *)(uintptr_t)w = tag_value(it->serial, w));
        tc->written[it->serial] = true;
        return;
    }
    if (!tc->written[it->serial]) {
        tc->r->skipped_checks++;
        return;
    }
    FOR_EACH_TAG(it->addr, it->size, tc->page, w, {
        tc->r->checked_words++;
        tc->r->corrupt_words += *(volatile uint64_t *)(uintptr_t)w != tag_value(it->serial, w);
    });
}

/* Runs it at once, or (queues) when its stream's submission it->count completes. */
static bool tags_add(tag_checker *tc, uint32_t stream, const tag_item *it) {
    if (!tc->queues) {
        tags_run(tc, it);
        return true;
    }
    tag_queue *q = &tc->queues[stream];
    if (q->head + q->len == q->cap) {
        if (q->head && q->head >= q->len) { /* at least half consumed: reuse the front (amortised O(1)) */
            memmove(q->items, q->items + q->head, q->len * sizeof *q->items);
            q->head = 0;
        } else {
            size_t cap = q->cap ? q->cap * 2 : 64;
            tag_item *grown = realloc(q->items, cap * sizeof *grown);
            if (!grown) return false;
            q->items = grown;
            q->cap = cap;
        }
    }
    q->items[q->head + q->len++] = *it;
    return true;
}

/* The host backend's completion hook: runs the queued items the stream has now reached. */
static void tags_on_complete(void *user, void *stream, uint64_t completed) {
    tag_checker *tc = user;
    for (uint32_t i = 0; i < tc->stream_count; i++) {
        if (tc->streams[i] != stream) continue;
        tag_queue *q = &tc->queues[i];
        while (q->len && q->items[q->head].count <= completed) {
            tags_run(tc, &q->items[q->head]);
            q->head++;
            q->len--;
        }
        return;
    }
}

static void tags_free(tag_checker *tc) {
    for (uint32_t i = 0; tc->queues && i < tc->stream_count; i++) free(tc->queues[i].items);
    free(tc->queues);
    free(tc->serial);
    free(tc->size);
    free(tc->written);
}

/* --log: the pool's messages on stderr, each naming the trace (several may be replayed in one run). */
static void log_to_stderr(void *user, nf_log_level level, const char *message) {
    static const char *const names[] = {"error", "warn", "info", "debug"};
    fprintf(stderr, "nofrag replay %s: %s: %s\n", ((const trace *)user)->name,
            (unsigned)level < 4 ? names[level] : "log", message);
}

/* The CUDA backend's reason when it cannot be made (no cuda.h at build time, no driver, no such
 * device), kept for the replay's error message. */
static void keep_backend_reason(void *user, nf_log_level level, const char *message) {
    (void)level;
    snprintf(user, 256, "%s", message);
}

int replay_run(const trace *t, const replay_options *opts, replay_result *r, char *err, size_t err_size) {
    memset(r, 0, sizeof *r);
    if (opts->cuda_device >= 0 && opts->stream_lag) {
        snprintf(err, err_size, "a stream lag is simulated on the host backend only");
        return -1;
    }
    if (opts->cuda_device >= 0 && opts->real_memory) {
        snprintf(err, err_size, "--real-memory backs the host backend; --cuda replays on device memory");
        return -1;
    }
    if (opts->cuda_pool && (opts->page_bytes || opts->pair_min_pages || opts->hold_near_live ||
                            opts->reuse_across_streams || opts->layout_log)) {
        snprintf(err, err_size, "--page-size, --pair-pages, --hold-near-live, --reuse-across-streams and --layout-log "
                                "steer nofrag's placement; with --cuda-pool the driver places blocks");
        return -1;
    }
    if (opts->cuda_device >= 0 && t->stream_count > CUDA_STREAMS) {
        snprintf(err, err_size, "the trace has %u streams; a replay on CUDA handles at most %d", t->stream_count,
                 (int)CUDA_STREAMS);
        return -1;
    }
    nf_backend *backend;
    char reason[256] = "";
    nf_status s = opts->cuda_device < 0 ? nf_backend_host_create(opts->real_memory, opts->granularity, &backend)
                  : opts->cuda_pool
                      ? nf_backend_cuda_pool_create(opts->cuda_device, false, keep_backend_reason, reason, &backend)
                      : nf_backend_cuda_create(opts->cuda_device, false, keep_backend_reason, reason, &backend);
    if (s != NF_OK) {
        snprintf(err, err_size, "cannot create the %s backend: %s%s%s%s",
                 opts->cuda_device < 0 ? "host" : opts->cuda_pool ? "cuda-pool" : "cuda",
                 nf_status_str(s), reason[0] ? " (" : "", reason, reason[0] ? ")" : "");
        return -1;
    }
    nf_config cfg = nf_config_default();
    cfg.capacity = opts->capacity;
    cfg.page_bytes = opts->page_bytes;
    cfg.pair_min_pages = opts->pair_min_pages;
    cfg.hold_near_live = opts->hold_near_live;
    cfg.reuse_across_streams = opts->reuse_across_streams;
    if (opts->log) {
        cfg.log = log_to_stderr;
        cfg.log_user = (void *)t;
        cfg.log_level = opts->log_level;
    }
    nf_pool *pool;
    if ((s = nf_pool_create(&cfg, backend, &pool)) != NF_OK) {
        snprintf(err, err_size, "cannot create a pool: %s", nf_status_str(s));
        nf_backend_destroy(backend);
        return -1;
    }
    void **ptrs = calloc(t->slot_count ? t->slot_count : 1, sizeof *ptrs);
    tag_checker tags = {.page = opts->granularity ? opts->granularity : 2ull << 20, .r = r,
                        .stream_count = t->stream_count};
    bool tags_on = opts->real_memory; /* host backend only: refused with --cuda above */
    if (tags_on) {
        tags.serial = calloc(t->slot_count ? t->slot_count : 1, sizeof *tags.serial);
        tags.size = calloc(t->slot_count ? t->slot_count : 1, sizeof *tags.size);
        tags.written = calloc(t->event_count + 1, sizeof *tags.written);
        if (opts->stream_lag) tags.queues = calloc(t->stream_count ? t->stream_count : 1, sizeof *tags.queues);
    }
    bool tags_ok = !tags_on || (tags.serial && tags.size && tags.written && (!opts->stream_lag || tags.queues));
    void **streams = calloc(t->stream_count ? t->stream_count : 1, sizeof *streams);
    /* --stream-lag: one simulated kernel is queued on an event's stream before the event (the
     * work that used the block, or will use it), and the ring holds, for the last stream_lag
     * events, which stream it was and how many kernels that stream had queued by then; as each
     * new event comes, the oldest entry's stream completes up to that count. */
    lag_entry *lag_ring = opts->stream_lag ? calloc(opts->stream_lag, sizeof *lag_ring) : NULL;
    uint64_t *lag_queued = opts->stream_lag ? calloc(t->stream_count ? t->stream_count : 1, sizeof *lag_queued) : NULL;
    if (opts->per_step) {
        r->step_slots = t->step_count + 1;
        r->steps = calloc(r->step_slots, sizeof *r->steps);
    }
    if (!ptrs || !streams || (opts->per_step && !r->steps) || (opts->stream_lag && (!lag_ring || !lag_queued)) ||
        !tags_ok) {
        snprintf(err, err_size, "out of memory");
        replay_result_free(r);
        tags_free(&tags);
        free(lag_ring);
        free(lag_queued);
        free(ptrs);
        free(streams);
        nf_pool_destroy(pool);
        nf_backend_destroy(backend);
        return -1;
    }
    for (uint32_t i = 0; i < t->stream_count; i++)
        streams[i] = opts->cuda_device >= 0 ? cuda_streams[i] : (void *)(uintptr_t)t->streams[i];
    tags.streams = streams;
    if (tags.queues) nf_host_set_completion_hook(backend, tags_on_complete, &tags);
    nf_stats step_last = {0}; /* per-step slot 0 includes making the pool */

    uint32_t window_step = t->step_count > REPLAY_WARMUP_STEPS ? REPLAY_WARMUP_STEPS : 0;
    uint64_t window_event = t->step_count ? t->step_starts[window_step] : 0;
    r->window_steps = t->step_count > REPLAY_WARMUP_STEPS ? t->step_count - REPLAY_WARMUP_STEPS
                                                         : (t->step_count ? t->step_count : 1);
    r->recorded_step_us =
        t->step_count ? (double)(t->last_time_us - t->step_times_us[window_step]) / r->window_steps : 0.0;
    uint32_t next_step = 0;
    FILE *layout = opts->layout_log;
    /* The layout log: a header naming the range's base, the page size and the cap in pages, then
     * one line per event that reached the pool: "A ADDRESS SIZE" (a placement, SIZE as the pool
     * rounded it), "F ADDRESS" (a free), "S" (a step mark). Numbers are decimal; a block's pages
     * are (ADDRESS - base) / page_bytes to (ADDRESS + SIZE - 1 - base) / page_bytes. */
    if (layout) {
        uint64_t page = opts->page_bytes ? opts->page_bytes : opts->granularity ? opts->granularity : 2ull << 20;
        uint64_t base = 0;
        nf_pool_walk(pool, first_block_address, &base); /* the empty pool: one block, the range */
        fprintf(layout, "# nofrag layout log: trace %s base %llu page_bytes %llu capacity_pages %llu\n", t->name,
                (unsigned long long)base, (unsigned long long)page, (unsigned long long)(opts->capacity / page));
    }
    uint64_t progress_every = t->event_count / 100 + 1;
    double start = now_seconds();
    for (uint64_t i = 0; i < t->event_count && r->status == NF_OK; i++) {
        while (next_step < t->step_count && t->step_starts[next_step] == i) {
            if (opts->per_step) per_step_close(pool, r, next_step, &step_last);
            nf_step_mark(pool);
            if (layout) fputs("S\n", layout);
            next_step++;
        }
        if (i == window_event) nf_stats_get(pool, &r->window_start);
        const trace_event *ev = &t->events[i];
        if (opts->stream_lag &&
            (r->status = lag_advance(backend, streams, lag_ring, lag_queued, opts->stream_lag, i, ev->stream)) != NF_OK)
            break;
        if (ev->action == TRACE_ALLOC) {
            s = nf_alloc(pool, ev->size, streams[ev->stream], &ptrs[ev->slot]);
            if (s == NF_ERR_OUT_OF_MEMORY) r->failed_allocs++;
            else if (s != NF_OK) r->status = s;
            uint64_t rounded = (ev->size + cfg.alignment - 1) / cfg.alignment * cfg.alignment;
            if (tags_on && ptrs[ev->slot] && r->status == NF_OK) {
                tags.serial[ev->slot] = i + 1;
                tags.size[ev->slot] = rounded ? rounded : cfg.alignment;
                /* The write runs on the block's stream after the allocation (a kernel of its own). */
                if (opts->stream_lag && (r->status = nf_host_stream_submit(backend, streams[ev->stream])) == NF_OK)
                    lag_queued[ev->stream]++;
                tag_item it = {opts->stream_lag ? lag_queued[ev->stream] : 0, (uintptr_t)ptrs[ev->slot],
                               tags.size[ev->slot], i + 1, false};
                if (!tags_add(&tags, ev->stream, &it)) r->status = NF_ERR_NO_MEMORY_HOST;
            }
            if (layout && ptrs[ev->slot])
                fprintf(layout, "A %llu %llu\n", (unsigned long long)(uintptr_t)ptrs[ev->slot],
                        (unsigned long long)rounded);
        } else if (ptrs[ev->slot]) {
            if (layout) fprintf(layout, "F %llu\n", (unsigned long long)(uintptr_t)ptrs[ev->slot]);
            if (tags_on) { /* the check runs with the work the free event queued before the free */
                tag_item it = {opts->stream_lag ? lag_queued[ev->stream] : 0, (uintptr_t)ptrs[ev->slot],
                               tags.size[ev->slot], tags.serial[ev->slot], true};
                if (!tags_add(&tags, ev->stream, &it)) r->status = NF_ERR_NO_MEMORY_HOST;
            }
            if ((s = nf_free(pool, ptrs[ev->slot], streams[ev->stream])) != NF_OK) r->status = s;
            ptrs[ev->slot] = NULL;
        }
        if (opts->check_every && r->status == NF_OK && (i + 1) % opts->check_every == 0)
            r->status = nf_pool_check(pool);
        if (opts->progress && i % progress_every == 0)
            fprintf(stderr, "\r  replaying %s: %3llu%%", t->name,
                    (unsigned long long)(i * 100 / t->event_count));
    }
    r->seconds = now_seconds() - start;
    if (opts->check_every && r->status == NF_OK) r->status = nf_pool_check(pool);
    if (tags_on) {
        /* Every stream runs to its end, then the blocks still live keep their tags too. */
        for (uint32_t k = 0; tags.queues && k < t->stream_count; k++) nf_host_stream_complete(backend, streams[k]);
        for (uint64_t k = 0; k < t->slot_count; k++)
            if (ptrs[k]) tags_run(&tags, &(tag_item){0, (uintptr_t)ptrs[k], tags.size[k], tags.serial[k], true});
        tags_free(&tags);
    }
    free(lag_ring);
    free(lag_queued);
    if (opts->per_step) per_step_close(pool, r, next_step, &step_last);
    if (opts->progress) fprintf(stderr, "\r%*s\r", 60, "");
    r->events = t->event_count;
    nf_stats_get(pool, &r->stats);
    nf_stats d = stats_delta(&r->stats, &r->window_start);
    r->window = d;
    r->remaps_per_step = (double)d.num_remaps / r->window_steps;
    r->driver_calls_per_step = (double)d.backend_calls / r->window_steps;
    r->est_driver_us_per_step = replay_cost_us(&d) / r->window_steps;
    r->est_driver_us_total = replay_cost_us(&r->stats);
    free(ptrs);
    free(streams);
    nf_pool_destroy(pool);
    nf_backend_destroy(backend);
    if (r->status != NF_OK) {
        replay_result_free(r);
        snprintf(err, err_size, "%s: replay stopped: %s", t->path, nf_status_str(r->status));
        return -1;
    }
    return 0;
}

int replay_min_capacity(const trace *t, const replay_options *opts, uint64_t *min_out, char *err,
                        size_t err_size) {
    uint64_t gran = opts->page_bytes ? opts->page_bytes : opts->granularity ? opts->granularity : 2ull << 20;
    replay_options o = *opts;
    o.log = false; /* the search fails allocations on purpose */
    o.check_every = 0;
    o.real_memory = false; /* the figures are the same; the checks belong to the replay itself */
    o.progress = false;
    o.per_step = false;
    o.layout_log = NULL;
    replay_result r;
    /* Below the live peak nothing can succeed: lo pages fail, hi pages succeed. */
    uint64_t lo = (t->peak_live + gran - 1) / gran - 1;
    uint64_t hi = lo + 1 + (lo + 1) / 64;
    for (;;) {
        o.capacity = hi * gran;
        if (replay_run(t, &o, &r, err, err_size)) return -1;
        if (r.failed_allocs == 0) break;
        lo = hi;
        hi += hi / 8 + 1;
        if (hi > 64 * (lo + 1)) {
            snprintf(err, err_size, "%s: no capacity up to %llu bytes completes the trace", t->path,
                     (unsigned long long)(hi * gran));
            return -1;
        }
    }
    while (hi - lo > 1) {
        uint64_t mid = lo + (hi - lo) / 2;
        o.capacity = mid * gran;
        if (opts->progress)
            fprintf(stderr, "\r  %s: searching the minimum capacity, %llu..%llu pages   ", t->name,
                    (unsigned long long)lo, (unsigned long long)hi);
        if (replay_run(t, &o, &r, err, err_size)) return -1;
        if (r.failed_allocs == 0) hi = mid;
        else lo = mid;
    }
    if (opts->progress) fprintf(stderr, "\r%*s\r", 70, "");
    *min_out = hi * gran;
    return 0;
}
