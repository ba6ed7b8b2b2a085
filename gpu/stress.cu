/*
 * GPU data-integrity stress test for the CUDA backend.
 *
 * Several streams allocate blocks from one nofrag pool under a cap tight enough to force pages to
 * move. Each allocation is filled by a kernel on its stream with a pattern of its own; before each
 * free a kernel on the same stream checks the whole block and counts wrong words into a device
 * counter. A page moved under live data, a block handed to another stream while the first stream
 * still used it, or two blocks sharing memory all show up as wrong words.
 *
 * usage: stress OPS [STREAMS] [CAP_MIB] [PAGE_MIB] [FAIL_ONE_IN] [across] [pairs]
 *   exit 0: clean; 1: corruption or error; 77: no GPU
 *   PAGE_MIB: the pool's page size (nf_config.page_bytes); 0 or none: the device's granularity
 *   FAIL_ONE_IN: if set, one driver call in that many (create, map, unmap, set-access, release,
 *     event record/query/sync) fails before reaching the driver, as a driver error would; the
 *     allocation that met it fails with NF_ERR_BACKEND, and the live blocks' data must not care
 *     (a page left mapped without access would be an illegal address in the next kernel).
 *   across: nf_config.reuse_across_streams: memory freed on one stream serves the others at once,
 *     behind a device-side wait (cuStreamWaitEvent) for the freeing stream's kernels; a missing or
 *     misplaced wait lets a fill overwrite a block before its verify ran.
 *   pairs: nf_config.pair_min_pages = 2: blocks of two pages or more back the pairs of pages inside
 *     them with handles of two pages, mapped, moved and unmapped whole. Pairs are made only while
 *     the pool grows, so the pool is also trimmed to half the cap every TRIM_EVERY operations
 *     (idle pairs and singles released while kernels still run), and it grows again: without
 *     that a run makes a few dozen pairs, all in its first operations (and a failed set-access that
 *     left one page of a pair without access went unseen on the GPU). A run with pairs passes only
 *     if it made 20 or more (50-13,780 in the runs so far, the fewest with a failure injected
 *     into one driver call in four).
 */
#include <cuda_runtime.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "nofrag.h"
#include "nofrag_backend.h"

#define CUDA_OK(call)                                                                          \
    do {                                                                                       \
        cudaError_t e_ = (call);                                                               \
        if (e_ != cudaSuccess) {                                                               \
            fprintf(stderr, "%s:%d: %s failed: %s\n", __FILE__, __LINE__, #call, cudaGetErrorString(e_)); \
            exit(1);                                                                           \
        }                                                                                      \
    } while (0)

__device__ unsigned long long wrong_words;

__device__ __forceinline__ unsigned int pattern(unsigned int tag, size_t i) {
    return (unsigned int)(tag * 2654435761u) ^ (unsigned int)(i * 40503u + 17u);
}

__global__ void fill(unsigned int *p, size_t words, unsigned int tag) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < words; i += (size_t)gridDim.x * blockDim.x)
        p[i] = pattern(tag, i);
}

__global__ void verify(const unsigned int *p, size_t words, unsigned int tag) {
    unsigned long long bad = 0;
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < words; i += (size_t)gridDim.x * blockDim.x)
        bad += p[i] != pattern(tag, i);
    if (bad) atomicAdd(&wrong_words, bad);
}

static unsigned long long rng_state = 0x1234567;
static unsigned long long rng(void) {
    unsigned long long z = (rng_state += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static unsigned long long fail_one_in; /* see usage: FAIL_ONE_IN */

/* The pool's last error message, printed beside a failure of the test. */
static char last_error[512];

static void log_to_stderr(void *user, nf_log_level level, const char *message) {
    (void)user;
    if (level > NF_LOG_ERROR) return;
    snprintf(last_error, sizeof last_error, "%s", message);
    /* Injected failures are logged by the pool as errors: expected, so not printed. */
    if (!fail_one_in) fprintf(stderr, "nofrag: %s\n", message);
}

typedef struct live { unsigned int *p; size_t words; unsigned int tag; int stream; } live;

/* Failure injection: a table that forwards to the CUDA backend except when fail_now() says no. */
static nf_backend *cuda_be;
static unsigned long long injected;
static bool fail_now(void) {
    if (!fail_one_in || rng() % fail_one_in) return false;
    injected++;
    return true;
}
static const int INJECTED = 2; /* CUDA_ERROR_OUT_OF_MEMORY, a code the driver does return */
static int f_page_create(void *c, uint64_t n, uint64_t *h) { return fail_now() ? INJECTED : cuda_be->page_create(c, n, h); }
static int f_page_release(void *c, uint64_t h) { return fail_now() ? INJECTED : cuda_be->page_release(c, h); }
static int f_map(void *c, uint64_t va, uint64_t n, uint64_t h) { return fail_now() ? INJECTED : cuda_be->map(c, va, n, h); }
static int f_unmap(void *c, uint64_t va, uint64_t n) { return fail_now() ? INJECTED : cuda_be->unmap(c, va, n); }
static int f_set_access(void *c, uint64_t va, uint64_t n) { return fail_now() ? INJECTED : cuda_be->set_access(c, va, n); }
static int f_event_record(void *c, void *st, uint64_t *e) { return fail_now() ? INJECTED : cuda_be->event_record(c, st, e); }
static int f_event_query(void *c, uint64_t e) { return fail_now() ? INJECTED : cuda_be->event_query(c, e); }
static int f_event_sync(void *c, uint64_t e) { return fail_now() ? INJECTED : cuda_be->event_sync(c, e); }
static int f_stream_wait(void *c, void *st, uint64_t e) { return fail_now() ? INJECTED : cuda_be->stream_wait(c, st, e); }

int main(int argc, char **argv) {
    long ops = argc > 1 ? atol(argv[1]) : 1000000;
    int nstreams = argc > 2 ? atoi(argv[2]) : 4;
    unsigned long long cap_mib = argc > 3 ? strtoull(argv[3], NULL, 10) : 256;
    unsigned long long page_mib = argc > 4 ? strtoull(argv[4], NULL, 10) : 0; /* 0: the device's */
    unsigned long long fail_every = argc > 5 ? strtoull(argv[5], NULL, 10) : 0;
    bool across = false, pairs = false;
    for (int i = 6; i < argc; i++) {
        across |= strcmp(argv[i], "across") == 0;
        pairs |= strcmp(argv[i], "pairs") == 0;
    }
    int count = 0;
    if (cudaGetDeviceCount(&count) != cudaSuccess || count == 0) {
        printf("no GPU: skipped\n");
        return 77;
    }
    CUDA_OK(cudaSetDevice(0));
    CUDA_OK(cudaFree(0)); /* create the primary context */
    nf_backend *be;
    nf_status s = nf_backend_cuda_create(0, false, log_to_stderr, NULL, &be);
    if (s != NF_OK) {
        printf("cuda backend unavailable (%s): skipped\n", nf_status_str(s));
        return 77;
    }
    cuda_be = be;
    nf_backend injecting = *be;
    if (fail_every) {
        injecting.page_create = f_page_create;
        injecting.page_release = f_page_release;
        injecting.map = f_map;
        injecting.unmap = f_unmap;
        injecting.set_access = f_set_access;
        injecting.event_record = f_event_record;
        injecting.event_query = f_event_query;
        injecting.event_sync = f_event_sync;
        injecting.stream_wait = f_stream_wait;
    }
    nf_config cfg = nf_config_default();
    cfg.capacity = cap_mib << 20;
    cfg.page_bytes = page_mib << 20;
    cfg.reuse_across_streams = across;
    cfg.pair_min_pages = pairs ? 2 : 0;
    cfg.log = log_to_stderr;
    nf_pool *pool;
    if ((s = nf_pool_create(&cfg, &injecting, &pool)) != NF_OK) {
        fprintf(stderr, "pool create: %s\n", nf_status_str(s));
        return 1;
    }
    fail_one_in = fail_every; /* from here on: the pool exists */
    unsigned long long backend_failures = 0;
    cudaStream_t *streams = (cudaStream_t *)calloc((size_t)nstreams, sizeof *streams);
    for (int i = 0; i < nstreams; i++) CUDA_OK(cudaStreamCreateWithFlags(&streams[i], cudaStreamNonBlocking));
    enum { SLOTS = 96, TRIM_EVERY = 2000 };
    live slots[SLOTS] = {};
    unsigned int tag = 0;
    unsigned long long failures = 0, allocs = 0;
    for (long op = 0; op < ops; op++) {
        int i = (int)(rng() % SLOTS);
        if (slots[i].p) {
            live *l = &slots[i];
            verify<<<8, 256, 0, streams[l->stream]>>>(l->p, l->words, l->tag);
            CUDA_OK(cudaGetLastError());
            if ((s = nf_free(pool, l->p, streams[l->stream])) != NF_OK) {
                fprintf(stderr, "op %ld: free: %s (last pool error: %s)\n", op, nf_status_str(s), last_error);
                return 1;
            }
            l->p = NULL;
        } else {
            int st = (int)(rng() % (unsigned)nstreams);
            size_t bytes = rng() % 8 ? 512 + rng() % (256 << 10) : (1 << 20) + rng() % (12 << 20);
            void *p;
            s = nf_alloc(pool, bytes, streams[st], &p);
            if (s == NF_ERR_OUT_OF_MEMORY) { failures++; continue; }
            if (s == NF_ERR_BACKEND && fail_one_in) { backend_failures++; continue; }
            if (s != NF_OK) { fprintf(stderr, "alloc: %s\n", nf_status_str(s)); return 1; }
            allocs++;
            slots[i] = (live){(unsigned int *)p, bytes / 4, ++tag, st};
            fill<<<16, 256, 0, streams[st]>>>(slots[i].p, slots[i].words, slots[i].tag);
            CUDA_OK(cudaGetLastError());
        }
        if (pairs && op % TRIM_EVERY == TRIM_EVERY - 1) {
            s = nf_trim(pool, cfg.capacity / 2, NULL);
            if (s != NF_OK && !(s == NF_ERR_BACKEND && fail_one_in)) {
                fprintf(stderr, "op %ld: trim: %s (last pool error: %s)\n", op, nf_status_str(s), last_error);
                return 1;
            }
        }
        if ((fail_one_in || op % 100000 == 0) && (s = nf_pool_check(pool)) != NF_OK) {
            fprintf(stderr, "op %ld: pool check: %s (last pool error: %s)\n", op, nf_status_str(s), last_error);
            return 1;
        }
    }
    fail_one_in = 0; /* the rest must succeed */
    for (int i = 0; i < SLOTS; i++) {
        if (!slots[i].p) continue;
        verify<<<8, 256, 0, streams[slots[i].stream]>>>(slots[i].p, slots[i].words, slots[i].tag);
        nf_free(pool, slots[i].p, streams[slots[i].stream]);
    }
    CUDA_OK(cudaDeviceSynchronize());
    unsigned long long bad = 0;
    CUDA_OK(cudaMemcpyFromSymbol(&bad, wrong_words, sizeof bad));
    nf_stats st;
    nf_stats_get(pool, &st);
    int check = nf_pool_check(pool);
    fflush(stderr);
    printf("ops %ld%s, allocs %llu, out-of-memory %llu, remaps %llu, host waits %llu, device waits %llu, "
           "peak reserved %.1f MiB (cap %llu MiB), corrupt words %llu, check %s",
           ops, across ? " (reuse across streams)" : "", allocs, failures, (unsigned long long)st.num_remaps,
           (unsigned long long)st.num_event_waits, (unsigned long long)st.calls_stream_wait,
           (double)st.reserved_bytes.peak / 1048576.0, cap_mib, bad, nf_status_str((nf_status)check));
    if (fail_every) printf(", injected driver failures %llu, allocations failed by them %llu", injected, backend_failures);
    if (pairs) printf(", pairs made %llu", (unsigned long long)st.num_pairs_made);
    printf("\n");
    /* The pool goes before the streams it served: destroying it may record events on them. */
    if ((s = nf_pool_destroy(pool)) != NF_OK) {
        fprintf(stderr, "pool destroy: %s\n", nf_status_str(s));
        return 1;
    }
    nf_backend_destroy(be);
    for (int i = 0; i < nstreams; i++) cudaStreamDestroy(streams[i]);
    return bad == 0 && check == NF_OK && st.num_remaps > 0 && (!fail_every || backend_failures > 0) &&
                   (!across || st.calls_stream_wait > 0) && (!pairs || st.num_pairs_made >= 20)
               ? 0
               : 1;
}
