/*
 * Asynchronous streams modelled on the host, over real memory with aliasing: every "kernel" (fill
 * a block with its pattern, or verify it) is queued on its stream and runs only when that stream's
 * work completes, either because the test completes the stream (in random order) or because the
 * pool waits on an event. If the pool hands memory to one stream while another stream's queued
 * kernel still uses it, the kernels run in the wrong order and a verify sees a foreign pattern.
 * Run twice: with the host waiting for other streams' work, and with nf_config.reuse_across_streams,
 * where the pool makes the requesting stream wait on the "device" instead (the host backend then
 * completes the waited-for stream's kernels before any kernel queued after the wait).
 */
#include <string.h>

#include "check.h"

enum { STREAMS = 4, SLOTS = 48, MAX_QUEUED = 1 << 16 };

typedef struct kernel {
    uint64_t seq;  /* runs once its stream has completed this many submissions */
    uint64_t *ptr;
    size_t words;
    uint64_t tag;
    int verify;    /* 0: fill, 1: verify */
} kernel;

typedef struct stream_queue {
    kernel k[MAX_QUEUED];
    size_t head, tail;
    uint64_t submitted;
} stream_queue;

static stream_queue queues[STREAMS];
static uint64_t corrupt;
static nf_backend *backend;

static uint64_t pattern(uint64_t tag, size_t i) { return tag * 0x9e3779b97f4a7c15ull + i; }

static void run_up_to(int s, uint64_t completed) {
    stream_queue *q = &queues[s];
    while (q->head != q->tail && q->k[q->head % MAX_QUEUED].seq <= completed) {
        kernel *k = &q->k[q->head++ % MAX_QUEUED];
        for (size_t i = 0; i < k->words; i++) {
            if (k->verify) corrupt += k->ptr[i] != pattern(k->tag, i);
            else k->ptr[i] = pattern(k->tag, i);
        }
    }
}

static void on_complete(void *user, void *stream, uint64_t completed) {
    (void)user;
    run_up_to((int)(uintptr_t)stream - 1, completed);
}

static void *stream_token(int s) { return (void *)(uintptr_t)(s + 1); }

/* Makes stream `waiter` wait for the work queued on `target` so far (torch's wait_stream). */
static void join(int waiter, int target) {
    uint64_t event = 0;
    REQUIRE(backend->event_record(backend->ctx, stream_token(target), &event) == 0);
    REQUIRE(backend->stream_wait(backend->ctx, stream_token(waiter), event) == 0);
    REQUIRE(backend->event_release(backend->ctx, event) == 0);
}

/* joins_owed[s], bit t: before its next kernel, stream s waits for stream t (see run). */
static unsigned joins_owed[STREAMS];

static void submit(int s, uint64_t *ptr, size_t words, uint64_t tag, int verify) {
    for (int t = 0; t < STREAMS; t++)
        if (joins_owed[s] & (1u << t)) join(s, t);
    joins_owed[s] = 0;
    stream_queue *q = &queues[s];
    REQUIRE(q->tail - q->head < MAX_QUEUED);
    nf_host_stream_submit(backend, stream_token(s));
    q->k[q->tail++ % MAX_QUEUED] = (kernel){++q->submitted, ptr, words, tag, verify};
}

typedef struct live_block {
    uint64_t *ptr;
    size_t words;
    uint64_t tag;
    int stream;
} live_block;

static void run(uint64_t seed, uint64_t cap_pages, int ops, bool across, nf_stats *sum) {
    uint64_t rng = seed;
    const uint64_t G = 64 * 1024;
    memset(queues, 0, sizeof queues);
    memset(joins_owed, 0, sizeof joins_owed);
    test_pool_spec spec = {.real_memory = true, .gran = G, .capacity = cap_pages * G, .reuse_across_streams = across};
    nf_pool *pool = test_pool(&spec, &backend);
    nf_host_set_completion_hook(backend, on_complete, NULL);
    live_block live[SLOTS] = {{0}};
    uint64_t tag = 0;
    for (int op = 0; op < ops; op++) {
        int i = (int)rng_below(&rng, SLOTS);
        if (live[i].ptr) {
            int s = live[i].stream, other = (s + 1 + (int)rng_below(&rng, STREAMS - 1)) % STREAMS;
            if (rng_below(&rng, 8) == 0) {
                /* Used on another stream without telling the pool, as PyTorch code may (FSDP's
                 * gradients, read by the optimizer on the compute stream): that stream waits for
                 * the block's stream, verifies there, the block is freed on its own stream, which
                 * waits for the other before its next kernel (the job's own ordering; PyTorch's
                 * allocator reuses freed memory only on the freeing stream). */
                join(other, s);
                submit(other, live[i].ptr, live[i].words, live[i].tag, 1);
                joins_owed[s] |= 1u << other;
            } else {
                /* Verify on its stream, then free on that stream: the verify is still queued. */
                submit(s, live[i].ptr, live[i].words, live[i].tag, 1);
            }
            CHECK_OK(nf_free(pool, live[i].ptr, stream_token(s)));
            live[i].ptr = NULL;
        } else {
            int s = (int)rng_below(&rng, STREAMS);
            size_t bytes = 8 * (1 + (rng_below(&rng, 4) ? rng_below(&rng, 2048) : rng_below(&rng, 3 * G / 8)));
            void *p;
            nf_status st = nf_alloc(pool, bytes, stream_token(s), &p);
            CHECK(st == NF_OK || st == NF_ERR_OUT_OF_MEMORY);
            if (st != NF_OK) continue;
            live[i] = (live_block){p, bytes / 8, ++tag, s};
            submit(s, live[i].ptr, live[i].words, live[i].tag, 0);
        }
        if (rng_below(&rng, 8) == 0) { /* some stream finishes its queued work */
            int s = (int)rng_below(&rng, STREAMS);
            nf_host_stream_complete(backend, stream_token(s));
        }
        if (op % 256 == 0) CHECK_OK(nf_pool_check(pool));
    }
    for (int i = 0; i < SLOTS; i++)
        if (live[i].ptr) {
            submit(live[i].stream, live[i].ptr, live[i].words, live[i].tag, 1);
            CHECK_OK(nf_free(pool, live[i].ptr, stream_token(live[i].stream)));
        }
    for (int s = 0; s < STREAMS; s++) nf_host_stream_complete(backend, stream_token(s));
    nf_stats st;
    CHECK_OK(nf_stats_get(pool, &st));
    sum->num_remaps += st.num_remaps;
    sum->calls_event_sync += st.calls_event_sync;
    sum->calls_stream_wait += st.calls_stream_wait;
    sum->num_allocs += st.num_allocs;
    CHECK_OK(nf_pool_check(pool));
    CHECK_OK(nf_pool_destroy(pool));
    nf_backend_destroy(backend);
}

int main(void) {
    nf_stats host = {0}, device = {0};
    for (uint64_t seed = 1; seed <= 8; seed++) run(seed * 7777, 20, 6000, false, &host);
    CHECK(corrupt == 0);
    CHECK(host.num_remaps > 100);     /* pages moved and were aliased under queued work */
    CHECK(host.calls_event_sync > 0); /* and the host had to wait for other streams */
    CHECK(host.calls_stream_wait == 0);
    for (uint64_t seed = 1; seed <= 8; seed++) run(seed * 7777, 20, 6000, true, &device);
    CHECK(corrupt == 0);
    CHECK(device.num_remaps > 100);
    CHECK(device.calls_stream_wait > 100); /* memory crossed streams under queued work */
    CHECK(device.calls_event_sync < host.calls_event_sync);
    printf("host waits: %llu event syncs, %llu remaps, %llu allocations; device waits: %llu stream waits, "
           "%llu event syncs, %llu remaps, %llu allocations; corrupt words %llu\n",
           (unsigned long long)host.calls_event_sync, (unsigned long long)host.num_remaps,
           (unsigned long long)host.num_allocs, (unsigned long long)device.calls_stream_wait,
           (unsigned long long)device.calls_event_sync, (unsigned long long)device.num_remaps,
           (unsigned long long)device.num_allocs, (unsigned long long)corrupt);
    return check_exit("test_async_streams");
}
