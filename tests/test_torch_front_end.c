/* The PyTorch front end's CUDA graph pools, and its device pools over CUDA's memory pool (the
 * "cuda_pool" phase), without a GPU: the entry points PyTorch calls
 * (nf_torch_alloc / free, the begin- and end-allocate-to-pool and release-pool hooks, the
 * record-stream callback, empty_cache's trim), driven as PyTorch drives them around a capture, on
 * pools made on the host backend (nf_torch_use_host_backend). Checks where each block goes, what
 * is reused and what is not, that a graph's memory keeps its bytes, and that a released pool goes
 * only once all its blocks are freed. GPU runs of the same: gpu/graph_check.py. */
#include <pthread.h>
#include <string.h>

#include "check.h"

/* The front end's entry points (src/torch/torch_allocator.c; not in a public header: PyTorch finds
 * them by name). */
void *nf_torch_alloc(size_t size, int device, void *stream);
void nf_torch_free(void *ptr, size_t size, int device, void *stream);
void nf_torch_record_stream_hook(void *ptr, void *stream);
void nf_torch_begin_allocate_to_pool(int device, uint64_t pool_first, uint64_t pool_second, void *filter);
void nf_torch_end_allocate_to_pool(int device, uint64_t pool_first, uint64_t pool_second);
void nf_torch_release_pool(int device, uint64_t pool_first, uint64_t pool_second);
int nf_torch_graph_pools(int device, char *buf, size_t size);
int nf_torch_trim(int device, uint64_t keep_bytes);
int nf_torch_check(int device);
int nf_torch_use_host_backend(void);
int nf_torch_set_reserve(uint64_t reserve_bytes);
int nf_torch_set_pair_pages(uint64_t pair_min_pages);
int nf_torch_set_cuda_pool(int on);
int nf_torch_configure(uint64_t capacity_bytes, double capacity_fraction, uint64_t margin_bytes,
                       int peer_access, int log_level, uint64_t page_bytes, int reuse_across_streams);
int nf_torch_stats_json(int device, char *buf, size_t size);
const char *nf_torch_last_error(void);

enum { MIB = 1 << 20 };
static char stream_a, stream_b; /* stream handles: only compared */
#define A ((void *)&stream_a)
#define B ((void *)&stream_b)

typedef struct graph_figures {
    unsigned long long pools, reserved, allocated;
} graph_figures;

static graph_figures graphs(void) {
    char buf[256];
    graph_figures f = {0, 0, 0};
    CHECK_OK(nf_torch_graph_pools(0, buf, sizeof buf));
    CHECK(sscanf(buf, "{\"graph_pools\":%llu,\"graph_reserved_bytes\":%llu,\"graph_allocated_bytes\":%llu}", &f.pools,
                 &f.reserved, &f.allocated) == 3);
    return f;
}

/* ---- threads: captures begin, end and are released while other threads allocate ------------- */

enum { WORKERS = 4, WORKER_OPS = 3000, CAPTURES = 40 };
static int worker_errors;

/* Random blocks on the thread's own stream, each filled with a byte of its own and checked when
 * freed: a block handed to two owners, or memory moved under one, shows as a changed byte. */
static void *worker(void *arg) {
    uint64_t seed = (uint64_t)(uintptr_t)arg;
    void *stream = arg;
    enum { SLOTS = 16 };
    unsigned char *ptr[SLOTS] = {0};
    size_t size[SLOTS] = {0};
    int errors = 0;
    for (int op = 0; op < WORKER_OPS; op++) {
        int slot = (int)rng_below(&seed, SLOTS);
        unsigned char fill = (unsigned char)(slot + 1 + 16 * (seed & 7));
        if (ptr[slot]) {
            for (size_t i = 0; i < size[slot]; i += 4096) errors += ptr[slot][i] != ptr[slot][0];
            nf_torch_free(ptr[slot], size[slot], 0, stream);
            ptr[slot] = NULL;
        } else {
            size[slot] = 512 + rng_below(&seed, 3 * MIB);
            ptr[slot] = nf_torch_alloc(size[slot], 0, stream);
            if (!ptr[slot]) {
                errors++;
                continue;
            }
            memset(ptr[slot], fill, size[slot]);
        }
    }
    for (int i = 0; i < SLOTS; i++)
        if (ptr[i]) nf_torch_free(ptr[i], size[i], 0, stream);
    __atomic_add_fetch(&worker_errors, errors, __ATOMIC_RELAXED);
    return NULL;
}

/* Captures one after another, each into a pool of its own, blocks freed during and after, the id
 * released and trimmed. */
static void *capturer(void *arg) {
    (void)arg;
    uint64_t seed = 99;
    for (int c = 0; c < CAPTURES; c++) {
        void *kept[8];
        nf_torch_begin_allocate_to_pool(0, 1000 + (uint64_t)c, 0, NULL);
        for (int i = 0; i < 8; i++) {
            kept[i] = nf_torch_alloc(512 + rng_below(&seed, 4 * MIB), 0, A);
            if (i % 2 && kept[i]) {
                nf_torch_free(kept[i], 0, 0, A);
                kept[i] = NULL;
            }
        }
        nf_torch_end_allocate_to_pool(0, 1000 + (uint64_t)c, 0);
        nf_torch_release_pool(0, 1000 + (uint64_t)c, 0);
        for (int i = 0; i < 8; i++)
            if (kept[i]) nf_torch_free(kept[i], 0, 0, A);
        if (nf_torch_trim(0, 0) != NF_OK) __atomic_add_fetch(&worker_errors, 1, __ATOMIC_RELAXED);
    }
    return NULL;
}

static int threads_main(void) {
    REQUIRE(nf_torch_use_host_backend() == NF_OK);
    pthread_t workers[WORKERS], capture;
    static char streams[WORKERS];
    for (int i = 0; i < WORKERS; i++) REQUIRE(pthread_create(&workers[i], NULL, worker, &streams[i]) == 0);
    REQUIRE(pthread_create(&capture, NULL, capturer, NULL) == 0);
    for (int i = 0; i < WORKERS; i++) pthread_join(workers[i], NULL);
    pthread_join(capture, NULL);
    CHECK(worker_errors == 0);
    CHECK_OK(nf_torch_check(0));
    CHECK_OK(nf_torch_trim(0, 0));
    /* Every block is freed and every graph pool released: none may be left. */
    CHECK(graphs().pools == 0);
    return check_exit("test_torch_front_end threads");
}

/* ---- device pools over CUDA's memory pool (the block backend's host stand-in) ---------------- */

/* The figure `key` of the device pool's statistics JSON, or -1 if absent. */
static long long stat_of(const char *key) {
    char json[16384], pattern[96];
    CHECK_OK(nf_torch_stats_json(0, json, sizeof json));
    snprintf(pattern, sizeof pattern, "\"%s\":", key);
    const char *at = strstr(json, pattern);
    return at ? atoll(at + strlen(pattern)) : -1;
}

static int cuda_pool_main(void) {
    REQUIRE(nf_torch_use_host_backend() == NF_OK);
    /* A page size, a reserve or pairs of pages shape nofrag's own pages: refused with the block backend. */
    CHECK_OK(nf_torch_configure(0, 0.0, 512ull << 20, 2, 1, 4 * MIB, 0));
    CHECK(nf_torch_set_cuda_pool(1) == NF_ERR_INVALID_ARG);
    CHECK_OK(nf_torch_configure(0, 0.0, 512ull << 20, 2, 1, 0, 0));
    CHECK_OK(nf_torch_set_reserve(64 * MIB));
    CHECK(nf_torch_set_cuda_pool(1) == NF_ERR_INVALID_ARG);
    CHECK_OK(nf_torch_set_reserve(0));
    CHECK_OK(nf_torch_set_pair_pages(128));
    CHECK(nf_torch_set_cuda_pool(1) == NF_ERR_INVALID_ARG);
    CHECK_OK(nf_torch_set_pair_pages(0));
    CHECK_OK(nf_torch_set_cuda_pool(1));
    char *blocks[8];
    for (int i = 0; i < 8; i++) {
        blocks[i] = nf_torch_alloc((size_t)(i + 1) * MIB, 0, i % 2 ? B : A);
        REQUIRE(blocks[i] != NULL);
        memset(blocks[i], i + 1, (size_t)(i + 1) * MIB);
    }
    /* The backend placed them: block calls, no pages. */
    CHECK(stat_of("calls_block_alloc") == 8 && stat_of("calls_map") == 0 && stat_of("num_page_maps") == 0);
    CHECK(stat_of("allocated_bytes.current") == 36 * MIB && stat_of("reserved_bytes.current") >= 36 * MIB);
    nf_torch_record_stream_hook(blocks[0], B);
    for (int i = 0; i < 8; i += 2) nf_torch_free(blocks[i], 0, 0, A);
    CHECK_OK(nf_torch_check(0));
    /* A capture still goes to a pinned graph pool of its own, apart from the device pool. */
    nf_torch_begin_allocate_to_pool(0, 3, 0, NULL);
    char *captured = nf_torch_alloc(2 * MIB, 0, A);
    nf_torch_end_allocate_to_pool(0, 3, 0);
    CHECK(captured != NULL && graphs().pools == 1 && graphs().allocated == 2 * MIB);
    CHECK(stat_of("calls_block_alloc") == 8);
    /* empty_cache: the cached memory goes back; live blocks keep their bytes. */
    CHECK_OK(nf_torch_trim(0, 0));
    CHECK(stat_of("reserved_bytes.current") == stat_of("allocated_bytes.current"));
    bool intact = true;
    for (int i = 1; i < 8; i += 2)
        for (size_t k = 0; k < (size_t)(i + 1) * MIB; k += 4096) intact &= blocks[i][k] == i + 1;
    CHECK(intact);
    for (int i = 1; i < 8; i += 2) nf_torch_free(blocks[i], 0, 0, B);
    nf_torch_free(captured, 0, 0, A);
    nf_torch_release_pool(0, 3, 0);
    CHECK_OK(nf_torch_trim(0, 0));
    CHECK(graphs().pools == 0 && stat_of("reserved_bytes.current") == 0);
    CHECK_OK(nf_torch_check(0));
    return check_exit("test_torch_front_end cuda_pool");
}

int main(int argc, char **argv) {
    if (argc > 1 && strcmp(argv[1], "threads") == 0) return threads_main();
    if (argc > 1 && strcmp(argv[1], "cuda_pool") == 0) return cuda_pool_main();
    REQUIRE(nf_torch_use_host_backend() == NF_OK);
    /* A reserve over the device (16 GiB here) is refused when the device's pool is made. */
    CHECK_OK(nf_torch_set_reserve(32ull << 30));
    CHECK(nf_torch_alloc(MIB, 1, A) == NULL);
    CHECK(strstr(nf_torch_last_error(), "the reserve (34359738368 bytes) is more than its capacity") != NULL);
    /* 64 MiB reserved: held from the pool's creation on. */
    CHECK_OK(nf_torch_set_reserve(64 * MIB));
    void *before = nf_torch_alloc(MIB, 0, A); /* the device pool, made now */
    REQUIRE(before != NULL);
    char json[16384];
    CHECK_OK(nf_torch_stats_json(0, json, sizeof json));
    CHECK(strstr(json, "\"reserved_bytes.current\":67108864,") != NULL);
    CHECK(nf_torch_use_host_backend() == NF_ERR_INVALID_ARG); /* too late once a pool exists */
    CHECK(graphs().pools == 0);

    /* A capture into pool (7, 0) on stream A: its blocks go to a graph pool. */
    nf_torch_begin_allocate_to_pool(0, 7, 0, NULL);
    char *weights_out = nf_torch_alloc(3 * MIB, 0, A);
    char *scratch = nf_torch_alloc(MIB, 0, A);
    REQUIRE(weights_out && scratch);
    memset(weights_out, 0x5a, 3 * MIB);
    memset(scratch, 0x11, MIB);
    graph_figures during = graphs();
    CHECK(during.pools == 1 && during.allocated == 4 * MIB);
    nf_torch_free(scratch, MIB, 0, A); /* freed inside the capture */
    char *reused = nf_torch_alloc(MIB, 0, A);
    CHECK(reused == scratch); /* reused in the capture's own order, as PyTorch's private pools do */
    nf_torch_record_stream_hook(reused, B); /* another stream uses it: it must never be reused */
    /* Another stream allocating during the capture gets a pool of its own. */
    char *other_stream = nf_torch_alloc(MIB, 0, B);
    CHECK(other_stream != NULL && graphs().pools == 2);
    nf_torch_end_allocate_to_pool(0, 7, 0);
    CHECK_OK(nf_torch_check(0));
    /* A device out of range names no pool, graph pools included (nothing read past the table). */
    CHECK_OK(nf_torch_trim(99, 0));
    CHECK_OK(nf_torch_check(99));

    /* After the capture: the device pool again, never at the graph's addresses. */
    char *after = nf_torch_alloc(MIB, 0, A);
    CHECK(after != NULL && graphs().allocated == 5 * MIB); /* 3 + 1 + 1 on stream B */
    nf_torch_free(reused, MIB, 0, A); /* kept: stays allocated in the graph pool */
    CHECK(graphs().allocated == 5 * MIB);
    nf_torch_free(other_stream, MIB, 0, B);
    CHECK(graphs().allocated == 4 * MIB);
    /* Device-pool churn and a trim leave the graph's memory alone: its bytes are still there. */
    for (int i = 0; i < 20; i++) {
        char *p = nf_torch_alloc((size_t)(1 + i % 5) * MIB, 0, A);
        REQUIRE(p != NULL);
        CHECK(p + (1 + i % 5) * MIB <= weights_out || p >= weights_out + 3 * MIB);
        memset(p, 0xee, (size_t)(1 + i % 5) * MIB);
        nf_torch_free(p, 0, 0, A);
    }
    CHECK_OK(nf_torch_trim(0, 0));
    bool intact = true;
    for (size_t i = 0; i < 3 * MIB; i++) intact &= weights_out[i] == 0x5a;
    CHECK(intact);

    /* A second capture into the same pool and stream reuses the graph's freed memory (the output
     * is freed first), but not the kept block. */
    nf_torch_free(weights_out, 3 * MIB, 0, A);
    nf_torch_begin_allocate_to_pool(0, 7, 0, NULL);
    char *second = nf_torch_alloc(3 * MIB, 0, A);
    CHECK(second == weights_out);
    char *small = nf_torch_alloc(MIB, 0, A);
    CHECK(small != NULL && small != reused);
    /* A capture beginning while one is under way is refused (PyTorch would throw it). */
    nf_torch_begin_allocate_to_pool(0, 8, 0, NULL);
    CHECK(strstr(nf_torch_last_error(), "another was under way") != NULL);
    nf_torch_end_allocate_to_pool(0, 7, 0);
    CHECK_OK(nf_torch_check(0));

    /* Released, the pools go at the first trim after all their blocks are freed. */
    CHECK(graphs().pools == 2);
    nf_torch_release_pool(0, 7, 0);
    CHECK_OK(nf_torch_trim(0, 0));
    /* Stream B's pool, empty, is gone; stream A's holds second, small and the kept block. */
    CHECK(graphs().pools == 1 && graphs().allocated == 5 * MIB);
    nf_torch_free(second, 3 * MIB, 0, A);
    nf_torch_free(small, MIB, 0, A);
    CHECK_OK(nf_torch_trim(0, 0));
    graph_figures gone = graphs();
    CHECK(gone.pools == 0 && gone.reserved == 0 && gone.allocated == 0);

    /* With no capture the device pool serves everything, as before any graph. */
    void *last = nf_torch_alloc(2 * MIB, 0, A);
    CHECK(last != NULL && graphs().pools == 0);
    nf_torch_free(last, 2 * MIB, 0, A);
    nf_torch_free(after, MIB, 0, A);
    nf_torch_free(before, MIB, 0, A);
    CHECK_OK(nf_torch_check(0));
    return check_exit("test_torch_front_end");
}
