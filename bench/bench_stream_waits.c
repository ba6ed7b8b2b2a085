/*
 * How often the pool makes the host wait for another stream, on a host model of FSDP's pattern:
 * per layer, an all-gather stream allocates a parameter buffer and queues its all-gather (the
 * next layer's is queued before this layer's compute, as FSDP prefetches); the compute stream
 * records the buffer (nf_record_stream), allocates an activation and queues its kernel; the buffer
 * is freed on the all-gather stream. The simulated GPU catches up with the host every LAG layers
 * (the host backend completes a stream's queued work all at once). Prints the
 * event syncs (host stalls), memory held and page moves, under a loose cap held near live (the
 * PyTorch front end's default) and under the same cap filled as a budget.
 *
 * usage: bench_stream_waits [LAYERS] [LAG]
 */
#include <stdio.h>
#include <stdlib.h>

#include "nofrag.h"
#include "nofrag_backend.h"

enum { GRAN = 64 * 1024 };

static uint64_t rng = 7;
static uint64_t next_rand(void) {
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return rng;
}

static int run(int layers, int lag, bool hold, bool across) {
    nf_backend *be;
    if (nf_backend_host_create(false, GRAN, &be) != NF_OK) return 1;
    nf_config cfg = nf_config_default();
    cfg.capacity = 4096ull * GRAN;
    cfg.virtual_bytes = 16384ull * GRAN;
    cfg.hold_near_live = hold;
    cfg.reuse_across_streams = across;
    nf_pool *pool;
    if (nf_pool_create(&cfg, be, &pool) != NF_OK) return 1;
    void *compute = (void *)1, *gather = (void *)2;
    enum { KEEP = 64 };
    void *acts[KEEP] = {0};
    void *buffers[2] = {0};
    rng = 7;
    for (int i = 0; i < layers; i++) {
        /* Prefetch: the next layer's parameters are gathered before this layer computes. */
        void *buf;
        if (nf_alloc(pool, GRAN * (2 + next_rand() % 6) + 4096, gather, &buf) != NF_OK) return 1;
        nf_host_stream_submit(be, gather);
        void *cur = buffers[i % 2];
        buffers[i % 2] = buf;
        if (cur) {
            nf_record_stream(pool, cur, compute);
            void **slot = &acts[next_rand() % KEEP];
            if (*slot) nf_free(pool, *slot, compute);
            if (nf_alloc(pool, GRAN * (1 + next_rand() % 12) + 512 * (next_rand() % 64), compute, slot) != NF_OK)
                return 1;
            nf_host_stream_submit(be, compute);
            nf_free(pool, cur, gather);
        }
        if (lag && i % lag == lag - 1) {
            nf_host_stream_complete(be, gather);
            nf_host_stream_complete(be, compute);
        }
    }
    nf_stats st;
    nf_stats_get(pool, &st);
    printf("%-22s %-14s host waits %6llu  device waits %6llu  queries %6llu  held / live peak %.3f  page moves %6llu  calls %6llu\n",
           hold ? "cap held near live" : "cap filled as budget", across ? "across streams" : "",
           (unsigned long long)st.calls_event_sync, (unsigned long long)st.calls_stream_wait,
           (unsigned long long)st.calls_event_query,
           (double)st.reserved_bytes.peak / (double)st.allocated_bytes.peak, (unsigned long long)st.num_remaps,
           (unsigned long long)st.backend_calls);
    for (int k = 0; k < KEEP; k++)
        if (acts[k]) nf_free(pool, acts[k], compute);
    for (int k = 0; k < 2; k++)
        if (buffers[k]) nf_free(pool, buffers[k], gather);
    nf_status s = nf_pool_check(pool);
    nf_pool_destroy(pool);
    nf_backend_destroy(be);
    return s != NF_OK;
}

int main(int argc, char **argv) {
    int layers = argc > 1 ? atoi(argv[1]) : 20000;
    int lag = argc > 2 ? atoi(argv[2]) : 3;
    if (layers < 1 || lag < 0) {
        fprintf(stderr, "usage: bench_stream_waits [LAYERS >= 1] [LAG >= 0]\n");
        return 2;
    }
    return run(layers, lag, true, false) | run(layers, lag, true, true) | run(layers, lag, false, false) |
           run(layers, lag, false, true);
}
