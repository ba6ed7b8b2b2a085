/*
 * PyTorch front end, C side: the two functions torch.cuda.memory.CUDAPluggableAllocator calls, and
 * the control functions the Python package reaches through ctypes. One pool per device, created on
 * its first allocation over the CUDA backend.
 *
 * This file reads no environment variable: the Python package turns NOFRAG_* settings into a call
 * of nf_torch_configure before the first allocation.
 */
#include <dlfcn.h>
#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "nofrag.h"
#include "nofrag_backend.h"

#pragma GCC visibility push(default)
void *nf_torch_alloc(size_t size, int device, void *stream);
void nf_torch_free(void *ptr, size_t size, int device, void *stream);
int nf_torch_configure(uint64_t capacity_bytes, double capacity_fraction, uint64_t margin_bytes,
                       int peer_access, int log_level, uint64_t page_bytes, int reuse_across_streams);
int nf_torch_set_memory_fraction(double fraction, int device);
int nf_torch_set_reserve(uint64_t reserve_bytes);
int nf_torch_set_pair_pages(uint64_t pair_min_pages);
int nf_torch_set_cuda_pool(int on);
int nf_torch_record_stream(void *ptr, int device, void *stream);
void nf_torch_record_stream_hook(void *ptr, void *stream);
void nf_torch_begin_allocate_to_pool(int device, uint64_t pool_first, uint64_t pool_second, void *filter);
void nf_torch_end_allocate_to_pool(int device, uint64_t pool_first, uint64_t pool_second);
void nf_torch_release_pool(int device, uint64_t pool_first, uint64_t pool_second);
int nf_torch_graph_pools(int device, char *buf, size_t size);
int nf_torch_use_host_backend(void);
const char *nf_torch_graph_refusal(int device);
int nf_torch_step(int device);
int nf_torch_trim(int device, uint64_t keep_bytes);
int nf_torch_phase_mark(int device, nf_phase *mark);
int nf_torch_phase_return(int device, const nf_phase *mark, uint64_t *released_out);
int nf_torch_check(int device);
int nf_torch_stats_json(int device, char *buf, size_t size);
int nf_torch_reset_peaks(int device);
int nf_torch_pool_exists(int device);
uint64_t nf_torch_pool_devices(void);
const char *nf_torch_last_error(void);
#pragma GCC visibility pop

enum { MAX_DEVICES = 64 };
#define HOST_DEVICE_BYTES (16ull << 30) /* a device's size under nf_torch_use_host_backend */

/* nf_torch_configure's peer_access. A copy between two GPUs of one process (tensor.to("cuda:1"),
 * a model split over devices) reads one device's memory from the other; with virtual memory that
 * needs access granted to the peer on every mapping, or the copy fails ("invalid argument", seen
 * on two H200s: gpu/peer_check.py). Granting it costs nothing until a second device is used, so
 * the default waits for that. */
enum {
    PEERS_NEVER = 0,
    PEERS_ALWAYS = 1,          /* every pool's pages are mapped for its peers from the start */
    PEERS_USED_DEVICES = 2 /* between the devices the process uses, as each one's pool is made: the default */
};

/* A CUDA graph's private memory: PyTorch names a pool (MempoolId_t, two 64-bit integers) before a
 * capture, and every block allocated until the capture ends belongs to it, for as long as PyTorch
 * keeps the id. nofrag gives each (id, stream) its own pool with pinned pages (nf_config.pin_pages):
 * a graph replays at the addresses its kernels used during capture, those of blocks freed before
 * the capture ended included, so those addresses must stay backed by memory no other tensor gets,
 * which a pinned pool of the graph's own guarantees. One stream a pool: its blocks are reused in
 * that stream's order only, as PyTorch's own private pools do, and the pool never needs to record
 * an event (which a capturing stream would take into the graph). A block another stream was
 * declared to use (record_stream) is never reused: its free is kept until the pool goes. */
typedef struct graph_pool {
    uint64_t id_first, id_second;
    void *stream;
    nf_backend *backend; /* its own: a backend serves one pool (nofrag_backend.h) */
    nf_pool *pool;
    uint64_t base, end; /* its virtual range: which pool a freed pointer belongs to */
    bool released;      /* PyTorch released the id: destroyed by the next empty_cache once empty */
    void **kept;        /* blocks another stream used: freed only when the pool is destroyed */
    size_t kept_count, kept_capacity;
    size_t kept_freed;  /* of them, those PyTorch has freed */
    struct graph_pool *next;
} graph_pool;

typedef struct device_pool {
    nf_backend *backend;
    nf_pool *pool;
    uint64_t total_bytes;
    /* Under torch_state.graph_lock: */
    graph_pool *graphs;
    bool capturing; /* between begin- and end-allocate-to-pool: allocations go to graph pools */
    uint64_t capture_first, capture_second;
} device_pool;

static struct {
    pthread_mutex_t lock; /* guards creation and settings; pools lock themselves */
    device_pool devices[MAX_DEVICES];
    uint64_t capacity_bytes;
    double capacity_fraction;
    uint64_t margin_bytes;
    int peer_access; /* PEERS_* */
    nf_log_level log_level;
    uint64_t page_bytes; /* nf_config.page_bytes; 0: the device's granularity */
    uint64_t reserve_bytes; /* nf_config.reserve_bytes of every device pool (nf_torch_set_reserve) */
    uint64_t pair_min_pages; /* nf_config.pair_min_pages of every device pool (nf_torch_set_pair_pages) */
    bool reuse_across_streams; /* nf_config.reuse_across_streams */
    /* nf_torch_set_cuda_pool: device pools over CUDA's stream-ordered memory pool (the block
     * backend) rather than virtual memory; CUDA graphs' pools stay on virtual memory (pinned). */
    bool cuda_pool;
    bool any_pool;
    bool host_backend; /* nf_torch_use_host_backend: tests of the front end without a GPU */
    pthread_mutex_t graph_lock; /* guards every device's graph pools and capture state */
    int graph_activity; /* devices capturing + graph pools alive: 0 lets alloc and free skip the lock */
    pthread_mutex_t error_lock; /* guards last_error: pools of several devices may log at once */
    char last_error[512];
} torch_state = {
    .lock = PTHREAD_MUTEX_INITIALIZER,
    .graph_lock = PTHREAD_MUTEX_INITIALIZER,
    .error_lock = PTHREAD_MUTEX_INITIALIZER,
    .margin_bytes = 512ull << 20,
    .peer_access = PEERS_USED_DEVICES,
    .log_level = NF_LOG_WARN,
};

/* Stores text as the message nofrag.last_error() returns. */
static void keep_error(const char *text) {
    pthread_mutex_lock(&torch_state.error_lock);
    snprintf(torch_state.last_error, sizeof torch_state.last_error, "%s", text);
    pthread_mutex_unlock(&torch_state.error_lock);
}

/* A log callback that keeps a backend's message in the buffer `user` points to
 * (BACKEND_REASON_SIZE bytes): why the backend cannot be made. */
enum { BACKEND_REASON_SIZE = 256 };
static void keep_backend_reason(void *user, nf_log_level level, const char *message) {
    (void)level;
    snprintf(user, BACKEND_REASON_SIZE, "%s", message);
}

/* Keeps the message for nofrag.last_error() and prints warnings and errors: in a training job
 * stderr is where an out-of-memory report must land. */
static void torch_log(void *user, nf_log_level level, const char *message) {
    int device = (int)(intptr_t)user;
    char text[sizeof torch_state.last_error];
    snprintf(text, sizeof text, "device %d: %s", device, message);
    keep_error(text);
    if (level <= torch_state.log_level) fprintf(stderr, "nofrag[cuda:%d]: %s\n", device, message);
}

static void set_error(const char *fmt, ...) {
    char text[sizeof torch_state.last_error];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(text, sizeof text, fmt, ap);
    va_end(ap);
    keep_error(text);
    if (torch_state.log_level >= NF_LOG_ERROR) fprintf(stderr, "nofrag: %s\n", text);
}

/* `peer` may read and write the memory of `owner`'s pool from now on, its graph pools included.
 * A failure is reported and the allocation goes on; copies from owner to peer may then fail. */
static void grant_peer(int owner, nf_pool *pool, int peer) {
    nf_status s = nf_pool_enable_peer_access(pool, peer);
    pthread_mutex_lock(&torch_state.graph_lock);
    for (graph_pool *g = torch_state.devices[owner].graphs; g && s == NF_OK; g = g->next)
        s = nf_pool_enable_peer_access(g->pool, peer);
    pthread_mutex_unlock(&torch_state.graph_lock);
    if (s != NF_OK)
        set_error("cuda:%d: granting cuda:%d access to its memory failed (%s): copies from it to cuda:%d may "
                  "fail; NOFRAG_PEER_ACCESS=1 grants every device access from the start",
                  owner, peer, nf_status_str(s), peer);
}

/* Device `fresh`'s pool was just made (PEERS_USED_DEVICES): it and each device whose pool was
 * made before grant each other access, so copies between the devices the process uses work. A
 * device the process never uses is granted nothing: every device granted makes each later mapping
 * of the pool cost a little more (a torchrun rank that touches cuda:0 by mistake grants cuda:0 and
 * its own device, not all eight of a node). Under torch_state.lock, before `created` is published. */
static void grant_peers_between(int fresh, nf_pool *created) {
    if (torch_state.peer_access != PEERS_USED_DEVICES) return;
    for (int d = 0; d < MAX_DEVICES; d++) {
        nf_pool *earlier = d == fresh ? NULL : torch_state.devices[d].pool;
        if (!earlier) continue;
        grant_peer(d, earlier, fresh);
        grant_peer(fresh, created, d);
    }
}

/* A new backend for `device`: CUDA's virtual memory (pages: a graph pool always, a device pool by
 * default) or CUDA's memory pool (blocks: a device pool under nf_torch_set_cuda_pool), or their
 * host stand-ins under nf_torch_use_host_backend. */
static nf_status device_backend_create(int device, bool blocks, nf_backend **backend_out) {
    bool peers = torch_state.peer_access == PEERS_ALWAYS;
    if (torch_state.host_backend)
        return blocks ? nf_backend_host_pool_create(HOST_DEVICE_BYTES, backend_out)
                      : nf_backend_host_create(true, 0, backend_out);
    return blocks ? nf_backend_cuda_pool_create(device, peers, torch_log, (void *)(intptr_t)device, backend_out)
                  : nf_backend_cuda_create(device, peers, torch_log, (void *)(intptr_t)device, backend_out);
}

/* The pool of `device`, created on first use. NULL on failure (last_error says why). */
static nf_pool *device_pool_get(int device) {
    if (device < 0 || device >= MAX_DEVICES) {
        set_error("device %d out of range", device);
        return NULL;
    }
    device_pool *d = &torch_state.devices[device];
    nf_pool *pool = __atomic_load_n(&d->pool, __ATOMIC_ACQUIRE);
    if (pool) return pool;
    pthread_mutex_lock(&torch_state.lock);
    if (!d->pool) {
        uint64_t free_bytes = 0, total = 0;
        nf_status s = NF_OK;
        if (torch_state.host_backend) /* a simulated 16 GiB device on real host memory */
            free_bytes = total = HOST_DEVICE_BYTES;
        else
            s = nf_cuda_mem_info(device, &free_bytes, &total);
        if (s == NF_OK) s = device_backend_create(device, torch_state.cuda_pool, &d->backend);
        if (s != NF_OK && torch_state.host_backend) {
            set_error("cannot open cuda:%d: the host backend: %s", device, nf_status_str(s));
        } else if (s != NF_OK) {
            /* The backend says why it cannot be made (no cuda.h in this build, no driver, no
             * virtual memory management); the memory query says nothing, so one is made again,
             * only to hear that reason. */
            char why[BACKEND_REASON_SIZE] = "";
            nf_backend *probe = NULL;
            if ((torch_state.cuda_pool ? nf_backend_cuda_pool_create : nf_backend_cuda_create)(
                    device, false, keep_backend_reason, why, &probe) == NF_OK)
                nf_backend_destroy(probe);
            if (why[0]) set_error("cannot open cuda:%d: %s (device %d: %s)", device, nf_status_str(s), device, why);
            else set_error("cannot open cuda:%d: %s", device, nf_status_str(s));
        } else {
            /* Capacity: explicit bytes, else a fraction of the device, else what is free now less
             * a margin for the CUDA context, cuBLAS workspaces and other libraries. */
            uint64_t cap = torch_state.capacity_bytes;
            if (!cap && torch_state.capacity_fraction > 0)
                cap = (uint64_t)((double)total * torch_state.capacity_fraction);
            if (!cap) cap = free_bytes > torch_state.margin_bytes ? free_bytes - torch_state.margin_bytes : 0;
            if (cap > free_bytes) cap = free_bytes;
            nf_config cfg = nf_config_default();
            cfg.capacity = cap;
            /* A cap the user did not set is the device's limit, not a budget: held memory should
             * follow the live peak (about 1.02x) rather than fill the device to save page moves. */
            cfg.hold_near_live = !torch_state.capacity_bytes && !(torch_state.capacity_fraction > 0);
            cfg.page_bytes = torch_state.cuda_pool ? 0 : torch_state.page_bytes; /* refused at set-up */
            cfg.reserve_bytes = torch_state.cuda_pool ? 0 : torch_state.reserve_bytes;
            cfg.pair_min_pages = torch_state.pair_min_pages; /* refused with the block backend */
            cfg.reuse_across_streams = torch_state.reuse_across_streams;
            cfg.virtual_bytes = 2 * total > 4 * cap ? 2 * total : 4 * cap;
            cfg.log = torch_log;
            cfg.log_user = (void *)(intptr_t)device;
            cfg.log_level = NF_LOG_DEBUG;
            nf_pool *created = NULL;
            if (!cap) s = NF_ERR_OUT_OF_MEMORY;
            else if (cfg.reserve_bytes > cap) s = NF_ERR_INVALID_ARG;
            else s = nf_pool_create(&cfg, d->backend, &created);
            if (s != NF_OK) {
                if (cfg.reserve_bytes > cap)
                    set_error("cannot create the pool of cuda:%d: the reserve (%llu bytes) is more than its "
                              "capacity (%llu bytes)", device, (unsigned long long)cfg.reserve_bytes,
                              (unsigned long long)cap);
                else
                    set_error("cannot create the pool of cuda:%d (capacity %llu bytes): %s", device,
                              (unsigned long long)cap, nf_status_str(s));
                nf_backend_destroy(d->backend);
                d->backend = NULL;
            } else {
                d->total_bytes = total;
                grant_peers_between(device, created);
                torch_state.any_pool = true;
                __atomic_store_n(&d->pool, created, __ATOMIC_RELEASE);
            }
        }
    }
    pool = d->pool;
    pthread_mutex_unlock(&torch_state.lock);
    return pool;
}

/* The pool of `device` if it exists; no creation. */
static nf_pool *device_pool_peek(int device) {
    if (device < 0 || device >= MAX_DEVICES) return NULL;
    return __atomic_load_n(&torch_state.devices[device].pool, __ATOMIC_ACQUIRE);
}

/*
 * PyTorch's pluggable allocator does not check what the allocation function returns: a NULL would
 * become a tensor without memory. A C allocator cannot throw, but c10 exports a function that
 * throws its error type (the one TORCH_CHECK uses); called here, with no lock held, the exception
 * unwinds through this frame (built with -fexceptions) into PyTorch, which raises RuntimeError in
 * Python. Looked up at run time, so libnofrag does not depend on PyTorch.
 */
typedef void (*torch_check_fail_fn)(const char *func, const char *file, uint32_t line, const char *msg);
static torch_check_fail_fn torch_check_fail_lookup(void) {
    static torch_check_fail_fn fn;
    static int looked;
    if (!looked) {
        /* c10::detail::torchCheckFail(const char*, const char*, unsigned int, const char*) */
        static const char symbol[] = "_ZN3c106detail14torchCheckFailEPKcS2_jS2_";
        void *lib = dlopen("libc10.so", RTLD_NOW | RTLD_NOLOAD);
        void *sym = lib ? dlsym(lib, symbol) : dlsym(RTLD_DEFAULT, symbol);
        memcpy(&fn, &sym, sizeof fn);
        looked = 1;
    }
    return fn;
}

/* ---- CUDA graphs' private pools (graph_pool above) ------------------------------------------ */

static bool graph_activity(void) { return __atomic_load_n(&torch_state.graph_activity, __ATOMIC_ACQUIRE) != 0; }

static void graph_activity_add(int delta) { __atomic_add_fetch(&torch_state.graph_activity, delta, __ATOMIC_RELEASE); }

/* Records the first block's address and the last block's end: a pool's virtual range. */
static int range_of(void *user, const nf_block_info *block) {
    uint64_t *range = user;
    if (!range[1]) range[0] = block->address;
    range[1] = block->address + block->size;
    return 0;
}

/* The graph pool of the capture under way on `device` for `stream`, made on first use, with a
 * backend of its own (the core serialises a backend's calls only within one pool) granting the
 * devices the device's pool grants. NULL on failure (last_error says why). Under graph_lock. */
static graph_pool *graph_pool_for(int device, void *stream) {
    device_pool *d = &torch_state.devices[device];
    for (graph_pool *g = d->graphs; g; g = g->next)
        if (!g->released && g->id_first == d->capture_first && g->id_second == d->capture_second && g->stream == stream)
            return g;
    graph_pool *g = calloc(1, sizeof *g);
    if (!g) {
        set_error("cuda:%d: no host memory for a CUDA graph's pool", device);
        return NULL;
    }
    nf_config cfg = nf_config_default();
    cfg.pin_pages = true;
    cfg.virtual_bytes = d->total_bytes; /* address space only: a graph may use the whole device */
    cfg.page_bytes = torch_state.page_bytes;
    cfg.log = torch_log;
    cfg.log_user = (void *)(intptr_t)device;
    cfg.log_level = NF_LOG_DEBUG;
    nf_status s = device_backend_create(device, false, &g->backend);
    if (s == NF_OK && (s = nf_pool_create(&cfg, g->backend, &g->pool)) != NF_OK) nf_backend_destroy(g->backend);
    if (s != NF_OK) {
        set_error("cuda:%d: cannot create a CUDA graph's pool: %s", device, nf_status_str(s));
        free(g);
        return NULL;
    }
    if (torch_state.peer_access == PEERS_USED_DEVICES)
        for (int other = 0; other < MAX_DEVICES; other++)
            if (other != device && device_pool_peek(other) && nf_pool_enable_peer_access(g->pool, other) != NF_OK)
                set_error("cuda:%d: granting cuda:%d access to a CUDA graph's memory failed: copies from it to "
                          "cuda:%d may fail", device, other, other);
    uint64_t range[2] = {0, 0};
    nf_pool_walk(g->pool, range_of, range);
    g->base = range[0];
    g->end = range[1];
    g->id_first = d->capture_first;
    g->id_second = d->capture_second;
    g->stream = stream;
    g->next = d->graphs;
    d->graphs = g;
    graph_activity_add(1);
    return g;
}

/* The graph pool on `device` whose range holds ptr, or NULL. Under graph_lock. */
static graph_pool *graph_pool_holding(int device, const void *ptr) {
    if (device < 0 || device >= MAX_DEVICES) return NULL;
    uint64_t at = (uint64_t)(uintptr_t)ptr;
    for (graph_pool *g = torch_state.devices[device].graphs; g; g = g->next)
        if (at >= g->base && at < g->end) return g;
    return NULL;
}

static bool kept_has(const graph_pool *g, const void *ptr, size_t count) {
    for (size_t i = 0; i < count; i++)
        if (g->kept[i] == ptr) return true;
    return false;
}

/* Another stream uses ptr, a block of graph pool g: its memory is never reused (kept), since
 * nothing orders that stream's work before a later block of the graph. */
static nf_status graph_keep(graph_pool *g, void *ptr) {
    if (kept_has(g, ptr, g->kept_count)) return NF_OK;
    if (g->kept_count == g->kept_capacity) {
        size_t capacity = g->kept_capacity ? 2 * g->kept_capacity : 16;
        void **grown = realloc(g->kept, capacity * sizeof *grown);
        if (!grown) return NF_ERR_NO_MEMORY_HOST;
        g->kept = grown;
        g->kept_capacity = capacity;
    }
    g->kept[g->kept_count++] = ptr;
    return NF_OK;
}

/* Destroys the released graph pools of `device` whose blocks PyTorch has all freed (kept ones
 * included). The caller has waited for the device's work. Under graph_lock. */
static nf_status graph_pools_reap(int device) {
    nf_status first_error = NF_OK;
    graph_pool **link = &torch_state.devices[device].graphs;
    while (*link) {
        graph_pool *g = *link;
        nf_stats st;
        nf_status s = nf_stats_get(g->pool, &st);
        if (s != NF_OK || !g->released || st.allocation.current > g->kept_freed) {
            link = &g->next;
            continue;
        }
        s = nf_pool_destroy(g->pool);
        if (s != NF_OK && first_error == NF_OK) first_error = s;
        nf_backend_destroy(g->backend);
        *link = g->next;
        free(g->kept);
        free(g);
        graph_activity_add(-1);
    }
    return first_error;
}

static void *alloc_failed(size_t size, int device);

void *nf_torch_alloc(size_t size, int device, void *stream) {
    nf_pool *pool = device_pool_get(device);
    void *ptr = NULL;
    nf_status s = pool ? NF_OK : NF_ERR_UNSUPPORTED;
    bool done = false;
    if (pool && graph_activity()) {
        pthread_mutex_lock(&torch_state.graph_lock);
        if (torch_state.devices[device].capturing) {
            graph_pool *g = graph_pool_for(device, stream);
            s = g ? nf_alloc(g->pool, size, stream, &ptr) : NF_ERR_NO_MEMORY_HOST;
            done = true;
        }
        pthread_mutex_unlock(&torch_state.graph_lock);
    }
    if (pool && !done) s = nf_alloc(pool, size, stream, &ptr);
    if (s == NF_OK || size == 0) return ptr;
    return alloc_failed(size, device);
}

/* Throws PyTorch's out-of-memory error where c10 is loaded; else NULL. */
static void *alloc_failed(size_t size, int device) {
    torch_check_fail_fn fail = torch_check_fail_lookup();
    if (fail) {
        char message[700];
        /* Worded as PyTorch's own ("CUDA out of memory. Tried to allocate"): batch-size finders
         * (Hugging Face Accelerate's, Lightning's) recognise an OOM by that text. */
        snprintf(message, sizeof message, "CUDA out of memory. Tried to allocate %zu bytes on cuda:%d (nofrag): %s",
                 size, device, nf_torch_last_error());
        fail("nf_torch_alloc", __FILE__, __LINE__, message); /* throws */
    }
    return NULL;
}

void nf_torch_free(void *ptr, size_t size, int device, void *stream) {
    (void)size;
    if (graph_activity()) {
        pthread_mutex_lock(&torch_state.graph_lock);
        graph_pool *g = graph_pool_holding(device, ptr);
        /* A kept block stays allocated in its pool: no later block of the graph may take it. */
        if (g && kept_has(g, ptr, g->kept_count)) g->kept_freed++;
        else if (g) nf_free(g->pool, ptr, stream);
        pthread_mutex_unlock(&torch_state.graph_lock);
        if (g) return;
    }
    nf_pool *pool = device_pool_peek(device);
    if (pool) nf_free(pool, ptr, stream);
}

int nf_torch_configure(uint64_t capacity_bytes, double capacity_fraction, uint64_t margin_bytes,
                       int peer_access, int log_level, uint64_t page_bytes, int reuse_across_streams) {
    /* The page size must also be a multiple of the device's granularity; the pool checks that
     * when it is made. */
    if (!(capacity_fraction >= 0 && capacity_fraction <= 1) || log_level < 0 || log_level > NF_LOG_DEBUG ||
        peer_access < PEERS_NEVER || peer_access > PEERS_USED_DEVICES ||
        (page_bytes & (page_bytes - 1)))
        return NF_ERR_INVALID_ARG;
    pthread_mutex_lock(&torch_state.lock);
    int s = NF_OK;
    if (torch_state.any_pool) {
        s = NF_ERR_UNSUPPORTED; /* pools exist: their capacity changes through set_memory_fraction */
    } else {
        torch_state.capacity_bytes = capacity_bytes;
        torch_state.capacity_fraction = capacity_fraction;
        torch_state.margin_bytes = margin_bytes;
        torch_state.peer_access = peer_access;
        torch_state.log_level = (nf_log_level)log_level;
        torch_state.page_bytes = page_bytes;
        torch_state.reuse_across_streams = reuse_across_streams != 0;
    }
    pthread_mutex_unlock(&torch_state.lock);
    return s;
}

/* Physical memory each device's pool makes when it is created and holds for its life
 * (nf_config.reserve_bytes): NOFRAG_RESERVE. Pools made before keep what they have. */
int nf_torch_set_reserve(uint64_t reserve_bytes) {
    pthread_mutex_lock(&torch_state.lock);
    torch_state.reserve_bytes = reserve_bytes;
    pthread_mutex_unlock(&torch_state.lock);
    return NF_OK;
}

/* Pairs of pages in every device pool made from now on (nf_config.pair_min_pages; 0: none):
 * NOFRAG_PAIR_PAGES. Pools made before keep their setting. */
int nf_torch_set_pair_pages(uint64_t pair_min_pages) {
    pthread_mutex_lock(&torch_state.lock);
    torch_state.pair_min_pages = pair_min_pages;
    pthread_mutex_unlock(&torch_state.lock);
    return NF_OK;
}

/* Device pools made from now on use CUDA's stream-ordered memory pool (on != 0) or virtual
 * memory (0, the default). NF_ERR_INVALID_ARG when a page size, a reserve or pairs of pages are
 * set with it (they shape nofrag's own pages; the driver places blocks there). */
int nf_torch_set_cuda_pool(int on) {
    pthread_mutex_lock(&torch_state.lock);
    int s = NF_OK;
    if (on && (torch_state.page_bytes || torch_state.reserve_bytes || torch_state.pair_min_pages)) s = NF_ERR_INVALID_ARG;
    else torch_state.cuda_pool = on != 0;
    pthread_mutex_unlock(&torch_state.lock);
    return s;
}

int nf_torch_set_memory_fraction(double fraction, int device) {
    if (!(fraction > 0 && fraction <= 1)) return NF_ERR_INVALID_ARG;
    nf_pool *pool = device_pool_get(device);
    if (!pool) return NF_ERR_UNSUPPORTED;
    return nf_pool_set_capacity(pool, (uint64_t)floor((double)torch_state.devices[device].total_bytes * fraction));
}

/* Another stream's use of a block of a graph pool: the block is kept (graph_keep). NF_ERR_INVALID_POINTER
 * if no graph pool of `device` holds ptr. */
static int graph_record_stream(int device, void *ptr, void *stream) {
    if (!graph_activity()) return NF_ERR_INVALID_POINTER;
    pthread_mutex_lock(&torch_state.graph_lock);
    graph_pool *g = graph_pool_holding(device, ptr);
    int s = !g ? NF_ERR_INVALID_POINTER : stream == g->stream ? NF_OK : graph_keep(g, ptr);
    pthread_mutex_unlock(&torch_state.graph_lock);
    return s;
}

int nf_torch_record_stream(void *ptr, int device, void *stream) {
    if (graph_record_stream(device, ptr, stream) == NF_OK) return NF_OK;
    nf_pool *pool = device_pool_peek(device);
    return pool ? nf_record_stream(pool, ptr, stream) : NF_ERR_INVALID_POINTER;
}

/* The devices `device` names: itself, or every device when negative; none out of range. */
#define FOR_EACH_DEVICE(device, d) \
    for (int d = (device) < 0 ? 0 : (device); d < ((device) < 0 ? MAX_DEVICES : (device) + 1) && d < MAX_DEVICES; d++)

/* device < 0: every device with a pool. */
#define FOR_EACH_POOL(device, pool, body)            \
    FOR_EACH_DEVICE(device, d_) {                    \
        nf_pool *pool = device_pool_peek(d_);         \
        if (pool) body                                \
    }

/* PyTorch's record-stream callback (CUDAPluggableAllocator::set_record_stream_fn), which its C++
 * code calls where it declares that another stream uses a tensor: ProcessGroupNCCL does so for the
 * tensors of its collectives, on NCCL's internal stream. Only the pointer and the stream come, so
 * the pool holding the block is looked up; a pointer no pool holds is not nofrag's and is left. */
void nf_torch_record_stream_hook(void *ptr, void *stream) {
    if (!ptr) return;
    FOR_EACH_POOL(-1, pool, {
        if (nf_record_stream(pool, ptr, stream) == NF_OK) return;
    })
    for (int d = 0; d < MAX_DEVICES && graph_activity(); d++)
        if (graph_record_stream(d, ptr, stream) == NF_OK) return;
}

/* PyTorch's begin-allocate-to-pool hook (CUDAPluggableAllocator::set_begin_allocate_to_pool),
 * called before a CUDA graph capture begins (torch.cuda.graph, make_graphed_callables) with the
 * graph's pool id (a pair of 64-bit integers, passed by value) and a stream filter (a C++ object
 * passed by address, not read: every allocation on the device until end-allocate-to-pool goes to
 * the graph's pools, which is what the filter selects when one thread captures). Blocks then go to
 * a pinned pool per (id, stream) (graph_pool above). Before PyTorch's end and release hooks could
 * be set (the Python side checks), nofrag refused captures instead: without private pools every
 * replay wrote over other tensors (gpu/graph_check.py). A failure throws through PyTorch's check
 * failure as nf_torch_alloc does, before the capture starts. */
void nf_torch_begin_allocate_to_pool(int device, uint64_t pool_first, uint64_t pool_second, void *filter) {
    (void)filter;
    nf_pool *pool = device_pool_get(device); /* the device opened, its size known */
    if (pool) {
        pthread_mutex_lock(&torch_state.graph_lock);
        device_pool *d = &torch_state.devices[device];
        bool nested = d->capturing;
        if (!nested) {
            d->capturing = true;
            d->capture_first = pool_first;
            d->capture_second = pool_second;
            graph_activity_add(1);
        }
        pthread_mutex_unlock(&torch_state.graph_lock);
        if (!nested) return;
        set_error("cuda:%d: a CUDA graph capture began while another was under way on the device; nofrag "
                  "allocates for one capture at a time per device", device);
    }
    torch_check_fail_fn fail = torch_check_fail_lookup();
    if (fail) fail("nf_torch_begin_allocate_to_pool", __FILE__, __LINE__, nf_torch_last_error()); /* throws */
}

/* PyTorch's end-allocate-to-pool hook: the capture has ended; later allocations go to the device's
 * pool again. The graph's pools stay, their blocks reused only by later captures into the same id. */
void nf_torch_end_allocate_to_pool(int device, uint64_t pool_first, uint64_t pool_second) {
    (void)pool_first;
    (void)pool_second;
    if (device < 0 || device >= MAX_DEVICES) return;
    pthread_mutex_lock(&torch_state.graph_lock);
    if (torch_state.devices[device].capturing) {
        torch_state.devices[device].capturing = false;
        graph_activity_add(-1);
    }
    pthread_mutex_unlock(&torch_state.graph_lock);
}

/* PyTorch's release-pool hook: no graph uses the id any more. Its pools are destroyed by the next
 * nf_torch_trim (torch.cuda.empty_cache, which waits for the device first) once PyTorch has freed
 * all their blocks; until then their memory stays held, as PyTorch's own private pools do. */
void nf_torch_release_pool(int device, uint64_t pool_first, uint64_t pool_second) {
    if (device < 0 || device >= MAX_DEVICES) return;
    pthread_mutex_lock(&torch_state.graph_lock);
    for (graph_pool *g = torch_state.devices[device].graphs; g; g = g->next)
        if (g->id_first == pool_first && g->id_second == pool_second) g->released = true;
    pthread_mutex_unlock(&torch_state.graph_lock);
}

/* The refusal nofrag gave before graph pools existed, for a PyTorch that lets the begin hook be
 * set but not the end or release hooks (the Python side calls it then, from a wrapped capture). */
const char *nf_torch_graph_refusal(int device) {
    set_error("cuda:%d: this PyTorch does not let nofrag hear when a CUDA graph capture ends or its pool "
              "is released, so CUDA graph capture (torch.cuda.graph, make_graphed_callables) is refused: "
              "a graph's replays would write into memory nofrag gives to other tensors. Run graphed code "
              "under PyTorch's own allocator", device);
    return nf_torch_last_error();
}

/* The graph pools of `device`, summed, as JSON: {"graph_pools": N, "graph_reserved_bytes": B,
 * "graph_allocated_bytes": B}. Returns NF_OK, or NF_ERR_INVALID_ARG if buf is too small. */
int nf_torch_graph_pools(int device, char *buf, size_t size) {
    uint64_t count = 0, reserved = 0, allocated = 0;
    if (device >= 0 && device < MAX_DEVICES && graph_activity()) {
        pthread_mutex_lock(&torch_state.graph_lock);
        for (graph_pool *g = torch_state.devices[device].graphs; g; g = g->next) {
            nf_stats st;
            if (nf_stats_get(g->pool, &st) != NF_OK) continue;
            count++;
            reserved += st.reserved_bytes.current;
            allocated += st.allocated_bytes.current;
        }
        pthread_mutex_unlock(&torch_state.graph_lock);
    }
    int n = snprintf(buf, size, "{\"graph_pools\":%llu,\"graph_reserved_bytes\":%llu,\"graph_allocated_bytes\":%llu}",
                     (unsigned long long)count, (unsigned long long)reserved, (unsigned long long)allocated);
    return n < 0 || (size_t)n >= size ? NF_ERR_INVALID_ARG : NF_OK;
}

/* torch.cuda.empty_cache (the Python side waits for the device first): idle pages of the device
 * pools, and the graph pools PyTorch released whose blocks are all freed. */
int nf_torch_trim(int device, uint64_t keep_bytes) {
    int s = NF_OK;
    FOR_EACH_POOL(device, pool, {
        int r = nf_trim(pool, keep_bytes, NULL);
        if (r != NF_OK) s = r;
    })
    if (graph_activity()) {
        pthread_mutex_lock(&torch_state.graph_lock);
        FOR_EACH_DEVICE(device, d) {
            int r = graph_pools_reap(d);
            if (r != NF_OK) s = r;
        }
        pthread_mutex_unlock(&torch_state.graph_lock);
    }
    return s;
}

/* nofrag.phase(): the mark of one device's pool (NF_ERR_INVALID_ARG when it has none), and the
 * return to it. CUDA graphs' pools are pinned and take no part. */
int nf_torch_phase_mark(int device, nf_phase *mark) {
    nf_pool *pool = device_pool_peek(device); /* NULL for a device out of range too */
    return pool ? nf_phase_mark(pool, mark) : NF_ERR_INVALID_ARG;
}

int nf_torch_phase_return(int device, const nf_phase *mark, uint64_t *released_out) {
    nf_pool *pool = device_pool_peek(device); /* NULL for a device out of range too */
    return pool ? nf_phase_return(pool, mark, released_out) : NF_ERR_INVALID_ARG;
}

/* op on the device's pool (device < 0: every pool); the last failure, or NF_OK. */
static int on_each_pool(int device, nf_status (*op)(nf_pool *)) {
    int s = NF_OK;
    FOR_EACH_POOL(device, pool, {
        int r = op(pool);
        if (r != NF_OK) s = r;
    })
    return s;
}

/* Every invariant of the device pools and of the graph pools. */
int nf_torch_check(int device) {
    int s = on_each_pool(device, nf_pool_check);
    if (!graph_activity()) return s;
    pthread_mutex_lock(&torch_state.graph_lock);
    FOR_EACH_DEVICE(device, d)
        for (graph_pool *g = torch_state.devices[d].graphs; g; g = g->next) {
            int r = nf_pool_check(g->pool);
            if (r != NF_OK) s = r;
        }
    pthread_mutex_unlock(&torch_state.graph_lock);
    return s;
}

/* Every pool's step mark, even after one fails (a failed event record: the step is counted). */
int nf_torch_step(int device) { return on_each_pool(device, nf_step_mark); }

int nf_torch_stats_json(int device, char *buf, size_t size) {
    nf_pool *pool = device_pool_peek(device);
    if (!pool) return NF_ERR_INVALID_ARG;
    nf_stats st;
    nf_status s = nf_stats_get(pool, &st);
    if (s != NF_OK) return s;
    return nf_stats_to_json(&st, buf, size, NULL);
}

/* For tests of the front end where there is no GPU (tests/test_torch_front_end.c): every device's
 * pool is made on the host backend, on real host memory, as a device of 16 GiB; the stream handles
 * given are only compared, never used. Must come before the first pool is made: NF_ERR_INVALID_ARG
 * after. Not for PyTorch: its tensors would point at host memory. */
int nf_torch_use_host_backend(void) {
    pthread_mutex_lock(&torch_state.lock);
    bool late = torch_state.any_pool;
    if (!late) torch_state.host_backend = true;
    pthread_mutex_unlock(&torch_state.lock);
    return late ? NF_ERR_INVALID_ARG : NF_OK;
}

/* torch.cuda.reset_peak_memory_stats: statistics only (the pool's policy keeps its own peak). */
int nf_torch_reset_peaks(int device) { return on_each_pool(device, nf_stats_reset_peaks); }

int nf_torch_pool_exists(int device) { return device_pool_peek(device) != NULL; }

/* Bit d set when device d has a pool: one call where nofrag.phase() and StepMarks would otherwise
 * ask each of the MAX_DEVICES slots at every step. */
uint64_t nf_torch_pool_devices(void) {
    _Static_assert(MAX_DEVICES <= 64, "the device mask has 64 bits");
    uint64_t mask = 0;
    for (int d = 0; d < MAX_DEVICES; d++)
        if (device_pool_peek(d)) mask |= UINT64_C(1) << d;
    return mask;
}

/* A copy made under the lock, per thread, so a message being written by another device's pool is
 * never read half done. */
const char *nf_torch_last_error(void) {
    static _Thread_local char copy[sizeof torch_state.last_error];
    pthread_mutex_lock(&torch_state.error_lock);
    memcpy(copy, torch_state.last_error, sizeof copy);
    pthread_mutex_unlock(&torch_state.error_lock);
    return copy;
}
