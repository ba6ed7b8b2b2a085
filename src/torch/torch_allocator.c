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
#include <string.h>

#include "nofrag.h"
#include "nofrag_backend.h"

#pragma GCC visibility push(default)
void *nf_torch_alloc(size_t size, int device, void *stream);
void nf_torch_free(void *ptr, size_t size, int device, void *stream);
int nf_torch_configure(uint64_t capacity_bytes, double capacity_fraction, uint64_t margin_bytes,
                       int peer_access, int log_level, uint64_t page_bytes, int reuse_across_streams);
int nf_torch_set_memory_fraction(double fraction, int device);
int nf_torch_record_stream(void *ptr, int device, void *stream);
void nf_torch_record_stream_hook(void *ptr, void *stream);
void nf_torch_begin_allocate_to_pool(int device, uint64_t pool_first, uint64_t pool_second, void *filter);
int nf_torch_step(int device);
int nf_torch_trim(int device, uint64_t keep_bytes);
int nf_torch_check(int device);
int nf_torch_stats_json(int device, char *buf, size_t size);
int nf_torch_reset_peaks(int device);
int nf_torch_pool_exists(int device);
const char *nf_torch_last_error(void);
#pragma GCC visibility pop

enum { MAX_DEVICES = 64 };

/* nf_torch_configure's peer_access. A copy between two GPUs of one process (tensor.to("cuda:1"),
 * a model split over devices) reads one device's memory from the other; with virtual memory that
 * needs access granted to the peer on every mapping, or the copy fails ("invalid argument", seen
 * on two H200s: gpu/peer_check.py). Granting it costs nothing until a second device is used, so
 * the default waits for that. */
enum {
    PEERS_NEVER = 0,
    PEERS_ALWAYS = 1,          /* every pool's pages are mapped for its peers from the start */
    PEERS_ONCE_TWO_DEVICES = 2 /* from the moment a second device's pool is made: the default */
};

typedef struct device_pool {
    nf_backend *backend;
    nf_pool *pool;
    uint64_t total_bytes;
} device_pool;

static struct {
    pthread_mutex_t lock; /* guards creation and settings; pools lock themselves */
    device_pool devices[MAX_DEVICES];
    uint64_t capacity_bytes;
    double capacity_fraction;
    uint64_t margin_bytes;
    int peer_access; /* PEERS_* */
    bool peers_granted; /* every pool's backend grants its peers */
    nf_log_level log_level;
    uint64_t page_bytes; /* nf_config.page_bytes; 0: the device's granularity */
    bool reuse_across_streams; /* nf_config.reuse_across_streams */
    bool any_pool;
    pthread_mutex_t error_lock; /* guards last_error: pools of several devices may log at once */
    char last_error[512];
} torch_state = {
    .lock = PTHREAD_MUTEX_INITIALIZER,
    .error_lock = PTHREAD_MUTEX_INITIALIZER,
    .margin_bytes = 512ull << 20,
    .peer_access = PEERS_ONCE_TWO_DEVICES,
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

/* A second device's pool was just made (its backend grants its peers): the pools made before it
 * grant theirs from now on, the pages they have mapped included. Once: a pool's peers are every
 * device that can reach it, so a third device finds them granted. A failure is reported and the
 * allocation goes on; copies from that pool to other devices may then fail. Under torch_state.lock. */
static void grant_peers_once(void) {
    if (torch_state.peer_access != PEERS_ONCE_TWO_DEVICES || torch_state.peers_granted) return;
    torch_state.peers_granted = true;
    for (int d = 0; d < MAX_DEVICES; d++) {
        nf_pool *pool = torch_state.devices[d].pool;
        nf_status s = pool ? nf_pool_enable_peer_access(pool) : NF_OK;
        if (s != NF_OK)
            set_error("cuda:%d: granting other devices access to its memory failed (%s): copies from it to "
                      "another GPU may fail; NOFRAG_PEER_ACCESS=1 grants it from the start",
                      d, nf_status_str(s));
    }
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
        nf_status s = nf_cuda_mem_info(device, &free_bytes, &total);
        if (s == NF_OK)
            s = nf_backend_cuda_create(device, torch_state.peer_access == PEERS_ALWAYS ||
                                           (torch_state.peer_access == PEERS_ONCE_TWO_DEVICES && torch_state.any_pool),
                                       torch_log, (void *)(intptr_t)device, &d->backend);
        if (s != NF_OK) {
            /* The backend says why it cannot be made (no cuda.h in this build, no driver, no
             * virtual memory management); the memory query says nothing, so one is made again,
             * only to hear that reason. */
            char why[BACKEND_REASON_SIZE] = "";
            nf_backend *probe = NULL;
            if (nf_backend_cuda_create(device, false, keep_backend_reason, why, &probe) == NF_OK)
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
            cfg.page_bytes = torch_state.page_bytes;
            cfg.reuse_across_streams = torch_state.reuse_across_streams;
            cfg.virtual_bytes = 2 * total > 4 * cap ? 2 * total : 4 * cap;
            cfg.log = torch_log;
            cfg.log_user = (void *)(intptr_t)device;
            cfg.log_level = NF_LOG_DEBUG;
            nf_pool *created = NULL;
            if (!cap) s = NF_ERR_OUT_OF_MEMORY;
            else s = nf_pool_create(&cfg, d->backend, &created);
            if (s != NF_OK) {
                set_error("cannot create the pool of cuda:%d (capacity %llu bytes): %s", device,
                          (unsigned long long)cap, nf_status_str(s));
                nf_backend_destroy(d->backend);
                d->backend = NULL;
            } else {
                d->total_bytes = total;
                if (torch_state.any_pool) grant_peers_once();
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

void *nf_torch_alloc(size_t size, int device, void *stream) {
    nf_pool *pool = device_pool_get(device);
    void *ptr = NULL;
    nf_status s = pool ? nf_alloc(pool, size, stream, &ptr) : NF_ERR_UNSUPPORTED;
    if (s == NF_OK || size == 0) return ptr;
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
    nf_pool *pool = device_pool_peek(device);
    if (pool) nf_free(pool, ptr, stream);
}

int nf_torch_configure(uint64_t capacity_bytes, double capacity_fraction, uint64_t margin_bytes,
                       int peer_access, int log_level, uint64_t page_bytes, int reuse_across_streams) {
    /* The page size must also be a multiple of the device's granularity; the pool checks that
     * when it is made. */
    if (!(capacity_fraction >= 0 && capacity_fraction <= 1) || log_level < 0 || log_level > NF_LOG_DEBUG ||
        peer_access < PEERS_NEVER || peer_access > PEERS_ONCE_TWO_DEVICES ||
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

int nf_torch_set_memory_fraction(double fraction, int device) {
    if (!(fraction > 0 && fraction <= 1)) return NF_ERR_INVALID_ARG;
    nf_pool *pool = device_pool_get(device);
    if (!pool) return NF_ERR_UNSUPPORTED;
    return nf_pool_set_capacity(pool, (uint64_t)floor((double)torch_state.devices[device].total_bytes * fraction));
}

int nf_torch_record_stream(void *ptr, int device, void *stream) {
    nf_pool *pool = device_pool_peek(device);
    return pool ? nf_record_stream(pool, ptr, stream) : NF_ERR_INVALID_POINTER;
}

/* device < 0: every device with a pool. */
#define FOR_EACH_POOL(device, pool, body)                                        \
    for (int d_ = device < 0 ? 0 : device; d_ < (device < 0 ? MAX_DEVICES : device + 1); d_++) { \
        nf_pool *pool = device_pool_peek(d_);                                     \
        if (pool) body                                                            \
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
}

/* PyTorch's begin-allocate-to-pool hook (CUDAPluggableAllocator::set_begin_allocate_to_pool). PyTorch
 * calls it before a CUDA graph capture begins (torch.cuda.graph, make_graphed_callables,
 * torch.compile's "reduce-overhead" mode) and when a torch.cuda.MemPool is entered. A captured graph
 * replays at the addresses its kernels used during capture, those of blocks freed before the capture
 * ended included; PyTorch's own allocator keeps them in a private pool for the graph's life. nofrag
 * has no private pools: it hands such blocks to other tensors and moves their pages, and every replay
 * writes over them (gpu/graph_check.py saw other tensors' bytes change in 5 of 5 replays). So the hook
 * refuses, before capture starts, by throwing through PyTorch's check failure as nf_torch_alloc does;
 * PyTorch raises it in Python as a RuntimeError. Its arguments (the pool's id, a pair of 64-bit
 * integers passed by value, and the stream filter, a C++ object passed by address) are not read. */
void nf_torch_begin_allocate_to_pool(int device, uint64_t pool_first, uint64_t pool_second, void *filter) {
    (void)pool_first;
    (void)pool_second;
    (void)filter;
    set_error("cuda:%d: nofrag does not support CUDA graph capture or private memory pools "
              "(torch.cuda.graph, torch.compile(mode=\"reduce-overhead\"), torch.cuda.MemPool): a graph's "
              "replays would write into memory nofrag gives to other tensors. Run graphed code under "
              "PyTorch's own allocator", device);
    torch_check_fail_fn fail = torch_check_fail_lookup();
    if (fail) fail("nf_torch_begin_allocate_to_pool", __FILE__, __LINE__, nf_torch_last_error()); /* throws */
}

int nf_torch_trim(int device, uint64_t keep_bytes) {
    int s = NF_OK;
    FOR_EACH_POOL(device, pool, {
        int r = nf_trim(pool, keep_bytes, NULL);
        if (r != NF_OK) s = r;
    })
    return s;
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

int nf_torch_check(int device) { return on_each_pool(device, nf_pool_check); }

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

/* torch.cuda.reset_peak_memory_stats: statistics only (the pool's policy keeps its own peak). */
int nf_torch_reset_peaks(int device) { return on_each_pool(device, nf_stats_reset_peaks); }

int nf_torch_pool_exists(int device) { return device_pool_peek(device) != NULL; }

/* A copy made under the lock, per thread, so a message being written by another device's pool is
 * never read half done. */
const char *nf_torch_last_error(void) {
    static _Thread_local char copy[sizeof torch_state.last_error];
    pthread_mutex_lock(&torch_state.error_lock);
    memcpy(copy, torch_state.last_error, sizeof copy);
    pthread_mutex_unlock(&torch_state.error_lock);
    return copy;
}
