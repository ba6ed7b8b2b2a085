/*
 * CUDA backends: virtual memory (cuMemAddressReserve / cuMemCreate / cuMemMap / cuMemSetAccess,
 * events for stream-ordered reuse), and the block backend over a stream-ordered memory pool
 * (cuMemPoolCreate / cuMemAllocFromPoolAsync / cuMemFreeAsync / cuMemPoolTrimTo) sharing the same
 * driver loading, context handling, events and peers.
 *
 * The driver is loaded at run time (dlopen of libcuda.so.1, then cuGetProcAddress for each entry
 * point, as PyTorch and NCCL do), so the library builds and loads where there is no GPU and no
 * driver; only cuda.h is needed to compile this file. Without cuda.h the constructors report
 * NF_ERR_UNSUPPORTED.
 *
 * Every primitive returns the driver's CUresult (0 on success). Each call runs with the device's
 * primary context current (the context PyTorch and the runtime API use), restoring whatever context
 * the calling thread had.
 */
#include "nofrag_backend.h"

#if defined(NOFRAG_HAVE_CUDA_H)

#include <cuda.h>
#include <dlfcn.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The driver entry points nofrag uses; X(name, return, params). */
#define NF_CUDA_ENTRY_POINTS(X)                                                                    \
    X(cuInit, (unsigned int flags))                                                                \
    X(cuDeviceGet, (CUdevice * device, int ordinal))                                               \
    X(cuDeviceGetCount, (int *count))                                                              \
    X(cuDeviceGetAttribute, (int *value, CUdevice_attribute attr, CUdevice dev))                   \
    X(cuDeviceCanAccessPeer, (int *can, CUdevice dev, CUdevice peer))                              \
    X(cuDevicePrimaryCtxRetain, (CUcontext * ctx, CUdevice dev))                                   \
    X(cuDevicePrimaryCtxRelease, (CUdevice dev))                                                   \
    X(cuCtxGetCurrent, (CUcontext * ctx))                                                          \
    X(cuCtxSetCurrent, (CUcontext ctx))                                                            \
    X(cuMemGetInfo, (size_t * free_bytes, size_t *total_bytes))                                    \
    X(cuMemGetAllocationGranularity,                                                               \
      (size_t * granularity, const CUmemAllocationProp *prop, CUmemAllocationGranularity_flags o)) \
    X(cuMemAddressReserve,                                                                         \
      (CUdeviceptr * ptr, size_t size, size_t alignment, CUdeviceptr addr, unsigned long long f))  \
    X(cuMemAddressFree, (CUdeviceptr ptr, size_t size))                                            \
    X(cuMemCreate, (CUmemGenericAllocationHandle * handle, size_t size,                            \
                    const CUmemAllocationProp *prop, unsigned long long flags))                    \
    X(cuMemRelease, (CUmemGenericAllocationHandle handle))                                         \
    X(cuMemMap, (CUdeviceptr ptr, size_t size, size_t offset, CUmemGenericAllocationHandle h,      \
                 unsigned long long flags))                                                        \
    X(cuMemUnmap, (CUdeviceptr ptr, size_t size))                                                  \
    X(cuMemSetAccess, (CUdeviceptr ptr, size_t size, const CUmemAccessDesc *desc, size_t count))   \
    X(cuEventCreate, (CUevent * event, unsigned int flags))                                        \
    X(cuEventRecord, (CUevent event, CUstream stream))                                             \
    X(cuEventQuery, (CUevent event))                                                               \
    X(cuEventSynchronize, (CUevent event))                                                         \
    X(cuEventDestroy, (CUevent event))                                                             \
    X(cuStreamWaitEvent, (CUstream stream, CUevent event, unsigned int flags))                     \
    X(cuThreadExchangeStreamCaptureMode, (CUstreamCaptureMode * mode))                             \
    X(cuMemPoolCreate, (CUmemoryPool * pool, const CUmemPoolProps *props))                          \
    X(cuMemPoolDestroy, (CUmemoryPool pool))                                                       \
    X(cuMemPoolSetAttribute, (CUmemoryPool pool, CUmemPool_attribute attr, void *value))           \
    X(cuMemPoolGetAttribute, (CUmemoryPool pool, CUmemPool_attribute attr, void *value))           \
    X(cuMemPoolTrimTo, (CUmemoryPool pool, size_t keep))                                           \
    X(cuMemPoolSetAccess, (CUmemoryPool pool, const CUmemAccessDesc *map, size_t count))           \
    X(cuMemAllocFromPoolAsync, (CUdeviceptr * ptr, size_t bytes, CUmemoryPool pool, CUstream s))   \
    X(cuMemFreeAsync, (CUdeviceptr ptr, CUstream stream))                                          \
    X(cuCtxSynchronize, (void))                                                                    \
    X(cuGetErrorName, (CUresult error, const char **name))

typedef struct driver_api {
#define NF_X_FIELD(name, params) CUresult (*name) params;
    NF_CUDA_ENTRY_POINTS(NF_X_FIELD)
#undef NF_X_FIELD
} driver_api;

static driver_api driver;
static CUresult driver_status = CUDA_ERROR_NOT_INITIALIZED;
static char driver_message[256];
static pthread_once_t driver_once = PTHREAD_ONCE_INIT;

/* cuGetProcAddress as declared by CUDA 12.0+ (with the symbol status out-parameter) and before. */
typedef CUresult (*get_proc_v2_fn)(const char *, void **, int, cuuint64_t, CUdriverProcAddressQueryResult *);
typedef CUresult (*get_proc_v1_fn)(const char *, void **, int, cuuint64_t);

static void driver_load(void) {
    void *lib = dlopen("libcuda.so.1", RTLD_NOW | RTLD_LOCAL);
    if (!lib) {
        snprintf(driver_message, sizeof driver_message, "cannot load libcuda.so.1: %s", dlerror());
        driver_status = CUDA_ERROR_NO_DEVICE;
        return;
    }
    get_proc_v2_fn get_v2 = (get_proc_v2_fn)dlsym(lib, "cuGetProcAddress_v2");
    get_proc_v1_fn get_v1 = get_v2 ? NULL : (get_proc_v1_fn)dlsym(lib, "cuGetProcAddress");
    /* Ask for the ABI of the CUDA version these headers describe, but no newer than 12.0 for
     * entry points whose signature we use from 12.0 headers. */
    const int version = CUDA_VERSION < 12000 ? CUDA_VERSION : 12000;
#define NF_X_LOAD(name, params)                                                                     \
    {                                                                                               \
        void *fn = NULL;                                                                            \
        if (get_v2) {                                                                               \
            CUdriverProcAddressQueryResult found;                                                   \
            if (get_v2(#name, &fn, version, CU_GET_PROC_ADDRESS_DEFAULT, &found) != CUDA_SUCCESS)  \
                fn = NULL;                                                                          \
        } else if (get_v1 && get_v1(#name, &fn, version, CU_GET_PROC_ADDRESS_DEFAULT) != CUDA_SUCCESS) { \
            fn = NULL;                                                                              \
        }                                                                                           \
        if (!fn) fn = dlsym(lib, #name);                                                            \
        if (!fn) {                                                                                  \
            snprintf(driver_message, sizeof driver_message, "libcuda.so.1 lacks %s", #name);        \
            driver_status = CUDA_ERROR_NOT_SUPPORTED;                                               \
            return;                                                                                 \
        }                                                                                           \
        memcpy(&driver.name, &fn, sizeof fn);                                                       \
    }
    NF_CUDA_ENTRY_POINTS(NF_X_LOAD)
#undef NF_X_LOAD
    driver_status = driver.cuInit(0);
    if (driver_status != CUDA_SUCCESS)
        snprintf(driver_message, sizeof driver_message, "cuInit failed (%d)", (int)driver_status);
}

static const char *result_name(CUresult r) {
    const char *name = NULL;
    if (driver.cuGetErrorName && driver.cuGetErrorName(r, &name) == CUDA_SUCCESS && name) return name;
    return "unknown CUresult";
}

typedef struct cuda_ctx {
    nf_log_fn log; /* names the failing driver call; the core adds which primitive it served */
    void *log_user;
    int ordinal;
    CUdevice device;
    CUcontext primary;
    CUmemAllocationProp prop;
    CUmemAccessDesc access[64]; /* the device first, then peers */
    size_t access_count;
    uint64_t gran;
    CUmemoryPool mempool; /* the block backend's pool; NULL for virtual memory */
} cuda_ctx;

/* Runs `call` with the device's primary context current, then restores the caller's. The calling
 * thread's stream capture mode is relaxed meanwhile: nofrag's calls may come while a CUDA graph is
 * being captured (its blocks are allocated then), and in the default ("global") mode the driver
 * refuses calls it deems unsafe during any capture; the allocator's own calls are not part of the
 * graph (PyTorch's allocator relaxes the mode around its calls for the same reason). */
#define WITH_CONTEXT(c, call)                                                        \
    do {                                                                             \
        CUcontext saved_ = NULL;                                                     \
        CUstreamCaptureMode mode_ = CU_STREAM_CAPTURE_MODE_RELAXED;                   \
        driver.cuThreadExchangeStreamCaptureMode(&mode_);                            \
        driver.cuCtxGetCurrent(&saved_);                                             \
        if (saved_ != (c)->primary) driver.cuCtxSetCurrent((c)->primary);            \
        rc = (call);                                                                 \
        if (saved_ != (c)->primary) driver.cuCtxSetCurrent(saved_);                  \
        driver.cuThreadExchangeStreamCaptureMode(&mode_);                            \
    } while (0)

/* NF_BACKEND_EVENT_PENDING is 1, which is also CUDA_ERROR_INVALID_VALUE: that one error is passed
 * on as this code instead. */
#define INVALID_VALUE_CODE (-1)

_Static_assert(CUDA_ERROR_OUT_OF_MEMORY == NF_BACKEND_OUT_OF_MEMORY, "cuMemCreate's out-of-memory code passes through");

static int as_code(CUresult r) { return r == CUDA_ERROR_INVALID_VALUE ? INVALID_VALUE_CODE : (int)r; }

/* Returns the primitive's code for `rc`, logging the driver call by name when it failed. */
static int checked(cuda_ctx *c, const char *call, CUresult rc) {
    if (rc != CUDA_SUCCESS && rc != CUDA_ERROR_NOT_READY && c->log) {
        char message[256];
        snprintf(message, sizeof message, "cuda backend: %s failed on device %d: %s (%d)", call, c->ordinal,
                 result_name(rc), (int)rc);
        c->log(c->log_user, NF_LOG_ERROR, message);
    }
    return as_code(rc);
}

static int cuda_reserve(void *ctx, uint64_t bytes, uint64_t *base_out) {
    cuda_ctx *c = ctx;
    CUdeviceptr ptr = 0;
    CUresult rc;
    WITH_CONTEXT(c, driver.cuMemAddressReserve(&ptr, bytes, c->gran, 0, 0));
    *base_out = ptr;
    return checked(c, "cuMemAddressReserve", rc);
}

static int cuda_unreserve(void *ctx, uint64_t base, uint64_t bytes) {
    cuda_ctx *c = ctx;
    CUresult rc;
    WITH_CONTEXT(c, driver.cuMemAddressFree(base, bytes));
    return checked(c, "cuMemAddressFree", rc);
}

static int cuda_page_create(void *ctx, uint64_t pages, uint64_t *handle_out) {
    cuda_ctx *c = ctx;
    CUmemGenericAllocationHandle h = 0;
    CUresult rc;
    WITH_CONTEXT(c, driver.cuMemCreate(&h, pages * c->gran, &c->prop, 0));
    *handle_out = h;
    if (rc == CUDA_ERROR_OUT_OF_MEMORY) return NF_BACKEND_OUT_OF_MEMORY; /* the pool reports it */
    return checked(c, "cuMemCreate", rc);
}

static int cuda_page_release(void *ctx, uint64_t handle) {
    cuda_ctx *c = ctx;
    CUresult rc;
    WITH_CONTEXT(c, driver.cuMemRelease(handle));
    return checked(c, "cuMemRelease", rc);
}

static int cuda_map(void *ctx, uint64_t va, uint64_t pages, uint64_t handle) {
    cuda_ctx *c = ctx;
    CUresult rc;
    WITH_CONTEXT(c, driver.cuMemMap(va, pages * c->gran, 0, handle, 0));
    return checked(c, "cuMemMap", rc);
}

static int cuda_unmap(void *ctx, uint64_t va, uint64_t pages) {
    cuda_ctx *c = ctx;
    CUresult rc;
    WITH_CONTEXT(c, driver.cuMemUnmap(va, pages * c->gran));
    return checked(c, "cuMemUnmap", rc);
}

static int cuda_set_access(void *ctx, uint64_t va, uint64_t pages) {
    cuda_ctx *c = ctx;
    CUresult rc;
    WITH_CONTEXT(c, driver.cuMemSetAccess(va, pages * c->gran, c->access, c->access_count));
    return checked(c, "cuMemSetAccess", rc);
}

static int cuda_event_record(void *ctx, void *stream, uint64_t *event_out) {
    cuda_ctx *c = ctx;
    CUevent ev = NULL;
    CUresult rc;
    if (*event_out) { /* record it again: one driver call instead of create + record + destroy */
        WITH_CONTEXT(c, driver.cuEventRecord((CUevent)(uintptr_t)*event_out, (CUstream)stream));
        return checked(c, "cuEventRecord", rc);
    }
    WITH_CONTEXT(c, driver.cuEventCreate(&ev, CU_EVENT_DISABLE_TIMING));
    if (rc != CUDA_SUCCESS) return checked(c, "cuEventCreate", rc);
    WITH_CONTEXT(c, driver.cuEventRecord(ev, (CUstream)stream));
    if (rc != CUDA_SUCCESS) {
        driver.cuEventDestroy(ev);
        return checked(c, "cuEventRecord", rc);
    }
    *event_out = (uint64_t)(uintptr_t)ev;
    return 0;
}

static int cuda_event_query(void *ctx, uint64_t event) {
    cuda_ctx *c = ctx;
    CUresult rc;
    WITH_CONTEXT(c, driver.cuEventQuery((CUevent)(uintptr_t)event));
    return rc == CUDA_ERROR_NOT_READY ? NF_BACKEND_EVENT_PENDING : checked(c, "cuEventQuery", rc);
}

static int cuda_event_sync(void *ctx, uint64_t event) {
    cuda_ctx *c = ctx;
    CUresult rc;
    WITH_CONTEXT(c, driver.cuEventSynchronize((CUevent)(uintptr_t)event));
    return checked(c, "cuEventSynchronize", rc);
}

static int cuda_stream_wait(void *ctx, void *stream, uint64_t event) {
    cuda_ctx *c = ctx;
    CUresult rc;
    WITH_CONTEXT(c, driver.cuStreamWaitEvent((CUstream)stream, (CUevent)(uintptr_t)event, 0));
    return checked(c, "cuStreamWaitEvent", rc);
}

static int cuda_event_release(void *ctx, uint64_t event) {
    cuda_ctx *c = ctx;
    CUresult rc;
    WITH_CONTEXT(c, driver.cuEventDestroy((CUevent)(uintptr_t)event));
    return checked(c, "cuEventDestroy", rc);
}

static const char *cuda_error_name(void *ctx, int code) {
    (void)ctx;
    if (code == NF_BACKEND_EVENT_PENDING) return "event pending";
    if (code == INVALID_VALUE_CODE) return result_name(CUDA_ERROR_INVALID_VALUE);
    return result_name((CUresult)code);
}

static void cuda_destroy(nf_backend *self) {
    cuda_ctx *c = self->ctx;
    if (c->mempool) { /* blocks still allocated keep it until they are freed (the driver's rule) */
        CUresult rc;
        WITH_CONTEXT(c, driver.cuMemPoolDestroy(c->mempool));
        checked(c, "cuMemPoolDestroy", rc);
    }
    driver.cuDevicePrimaryCtxRelease(c->device);
    free(c);
    free(self);
}

static void report(nf_log_fn log, void *user, const char *fmt, const char *a, int code) {
    if (!log) return;
    char message[400];
    snprintf(message, sizeof message, fmt, a, code);
    log(user, NF_LOG_ERROR, message);
}

/* Loads the driver and finds the device; NF_OK or the status to return. */
static nf_status device_open(int ordinal, CUdevice *device, nf_log_fn log, void *user) {
    pthread_once(&driver_once, driver_load);
    if (driver_status != CUDA_SUCCESS) {
        report(log, user, "cuda backend: %s (%d)", driver_message, (int)driver_status);
        return NF_ERR_UNSUPPORTED;
    }
    int count = 0;
    CUresult rc = driver.cuDeviceGetCount(&count);
    if (rc != CUDA_SUCCESS || ordinal < 0 || ordinal >= count) {
        report(log, user, "cuda backend: no device %s (cuDeviceGetCount: %d)", "with that ordinal", (int)rc);
        return rc != CUDA_SUCCESS ? NF_ERR_BACKEND : NF_ERR_INVALID_ARG;
    }
    if ((rc = driver.cuDeviceGet(device, ordinal)) != CUDA_SUCCESS) {
        report(log, user, "cuda backend: cuDeviceGet failed: %s (%d)", result_name(rc), (int)rc);
        return NF_ERR_BACKEND;
    }
    return NF_OK;
}

/* The add_peers primitive: device `only` (every other device if negative), if it can access this
 * one's memory as a peer, joins the access list that set_access grants. Adding one again changes
 * nothing. Each device on the list makes every later set_access map the pages for it too, so the
 * PyTorch front end adds only the devices its process uses. */
static int cuda_add_peers(void *ctx, int only) {
    cuda_ctx *c = ctx;
    int count = 0;
    CUresult rc = driver.cuDeviceGetCount(&count);
    if (rc != CUDA_SUCCESS) return checked(c, "cuDeviceGetCount", rc);
    for (int i = 0; i < count && c->access_count < 64; i++) {
        CUdevice peer;
        int can = 0;
        if (i == c->ordinal || (only >= 0 && i != only) || driver.cuDeviceGet(&peer, i) != CUDA_SUCCESS) continue;
        bool listed = false;
        for (size_t k = 1; k < c->access_count; k++) listed |= c->access[k].location.id == peer;
        if (listed) continue;
        if (driver.cuDeviceCanAccessPeer(&can, peer, c->device) != CUDA_SUCCESS || !can) continue;
        c->access[c->access_count].location.type = CU_MEM_LOCATION_TYPE_DEVICE;
        c->access[c->access_count].location.id = peer;
        c->access[c->access_count].flags = CU_MEM_ACCESS_FLAGS_PROT_READWRITE;
        c->access_count++;
    }
    if (c->mempool && c->access_count > 1) { /* a memory pool grants for all its memory at once */
        WITH_CONTEXT(c, driver.cuMemPoolSetAccess(c->mempool, c->access + 1, c->access_count - 1));
        return checked(c, "cuMemPoolSetAccess", rc);
    }
    return 0;
}

/* The context both CUDA backends share: the device opened, its primary context retained, its
 * allocation properties and granularity, access for the device itself. NF_OK or the status. */
static nf_status ctx_open(int ordinal, nf_log_fn log, void *log_user, cuda_ctx **ctx_out) {
    CUdevice device;
    nf_status s = device_open(ordinal, &device, log, log_user);
    if (s != NF_OK) return s;
    cuda_ctx *c = calloc(1, sizeof *c);
    if (!c) return NF_ERR_NO_MEMORY_HOST;
    c->log = log;
    c->log_user = log_user;
    c->ordinal = ordinal;
    c->device = device;
    CUresult rc;
    if ((rc = driver.cuDevicePrimaryCtxRetain(&c->primary, device)) != CUDA_SUCCESS) {
        report(log, log_user, "cuda backend: cuDevicePrimaryCtxRetain failed: %s (%d)", result_name(rc), (int)rc);
        free(c);
        return NF_ERR_BACKEND;
    }
    c->prop.type = CU_MEM_ALLOCATION_TYPE_PINNED;
    c->prop.location.type = CU_MEM_LOCATION_TYPE_DEVICE;
    c->prop.location.id = device;
    size_t gran = 0;
    WITH_CONTEXT(c, driver.cuMemGetAllocationGranularity(&gran, &c->prop, CU_MEM_ALLOC_GRANULARITY_MINIMUM));
    if (rc != CUDA_SUCCESS || gran == 0 || (gran & (gran - 1))) {
        report(log, log_user, "cuda backend: cuMemGetAllocationGranularity failed: %s (%d)", result_name(rc), (int)rc);
        driver.cuDevicePrimaryCtxRelease(device);
        free(c);
        return NF_ERR_BACKEND;
    }
    c->gran = gran;
    c->access[0].location.type = CU_MEM_LOCATION_TYPE_DEVICE;
    c->access[0].location.id = device;
    c->access[0].flags = CU_MEM_ACCESS_FLAGS_PROT_READWRITE;
    c->access_count = 1;
    *ctx_out = c;
    return NF_OK;
}

/* A backend table around c with the primitives both CUDA backends have. */
static nf_backend *table_new(cuda_ctx *c, const char *name, uint32_t caps) {
    nf_backend *b = calloc(1, sizeof *b);
    if (!b) return NULL;
    b->name = name;
    b->caps = caps | NF_BACKEND_CAP_EVENTS | NF_BACKEND_CAP_STREAM_WAIT;
    b->granularity = c->gran;
    b->ctx = c;
    b->add_peers = cuda_add_peers;
    b->event_record = cuda_event_record;
    b->event_query = cuda_event_query;
    b->event_sync = cuda_event_sync;
    b->stream_wait = cuda_stream_wait;
    b->event_release = cuda_event_release;
    b->error_name = cuda_error_name;
    b->destroy = cuda_destroy;
    return b;
}

/* device_open, then NF_ERR_UNSUPPORTED (reported as `lacking`) unless the device has `feature`. */
static nf_status device_open_with(int ordinal, CUdevice_attribute feature, const char *lacking, nf_log_fn log,
                                  void *log_user) {
    CUdevice device;
    nf_status s = device_open(ordinal, &device, log, log_user);
    if (s != NF_OK) return s;
    int has = 0;
    CUresult rc = driver.cuDeviceGetAttribute(&has, feature, device);
    if (rc != CUDA_SUCCESS || !has) {
        report(log, log_user, lacking, result_name(rc), (int)rc);
        return NF_ERR_UNSUPPORTED;
    }
    return NF_OK;
}

nf_status nf_backend_cuda_create(int ordinal, bool peer_access, nf_log_fn log, void *log_user,
                                 nf_backend **backend_out) {
    if (!backend_out) return NF_ERR_INVALID_ARG;
    *backend_out = NULL;
    nf_status s = device_open_with(ordinal, CU_DEVICE_ATTRIBUTE_VIRTUAL_MEMORY_MANAGEMENT_SUPPORTED,
                                   "cuda backend: device lacks virtual memory management (%s, %d)", log, log_user);
    if (s != NF_OK) return s;
    cuda_ctx *c;
    if ((s = ctx_open(ordinal, log, log_user, &c)) != NF_OK) return s;
    nf_backend *b = table_new(c, "cuda", NF_BACKEND_CAP_ALIASING);
    if (!b) {
        driver.cuDevicePrimaryCtxRelease(c->device);
        free(c);
        return NF_ERR_NO_MEMORY_HOST;
    }
    if (peer_access) cuda_add_peers(c, -1);
    b->reserve = cuda_reserve;
    b->unreserve = cuda_unreserve;
    b->page_create = cuda_page_create;
    b->page_release = cuda_page_release;
    b->map = cuda_map;
    b->unmap = cuda_unmap;
    b->set_access = cuda_set_access;
    *backend_out = b;
    return NF_OK;
}

/* ---- the memory-pool block backend ---------------------------------------------------------- */

static int pool_block_alloc(void *ctx, uint64_t bytes, void *stream, uint64_t *addr_out) {
    cuda_ctx *c = ctx;
    CUdeviceptr ptr = 0;
    CUresult rc;
    WITH_CONTEXT(c, driver.cuMemAllocFromPoolAsync(&ptr, bytes, c->mempool, (CUstream)stream));
    *addr_out = ptr;
    if (rc == CUDA_ERROR_OUT_OF_MEMORY) return NF_BACKEND_OUT_OF_MEMORY; /* not an error to log */
    return checked(c, "cuMemAllocFromPoolAsync", rc);
}

static int pool_block_free(void *ctx, uint64_t addr, void *stream) {
    cuda_ctx *c = ctx;
    CUresult rc;
    WITH_CONTEXT(c, driver.cuMemFreeAsync(addr, (CUstream)stream));
    return checked(c, "cuMemFreeAsync", rc);
}

static int pool_held_bytes(void *ctx, uint64_t *bytes_out) {
    cuda_ctx *c = ctx;
    cuuint64_t held = 0;
    CUresult rc;
    WITH_CONTEXT(c, driver.cuMemPoolGetAttribute(c->mempool, CU_MEMPOOL_ATTR_RESERVED_MEM_CURRENT, &held));
    *bytes_out = held;
    return checked(c, "cuMemPoolGetAttribute", rc);
}

/* The driver gives back only memory whose asynchronous free it has seen complete from the host
 * ("observed, e.g. by a synchronize"): on an H200, waiting for events recorded after the frees was
 * not enough, and the pool kept every byte. So the device is synchronised first, as PyTorch's
 * cudaMallocAsync backend does before it trims. */
static int pool_trim_to(void *ctx, uint64_t keep_bytes) {
    cuda_ctx *c = ctx;
    CUresult rc;
    WITH_CONTEXT(c, driver.cuCtxSynchronize());
    if (rc != CUDA_SUCCESS) return checked(c, "cuCtxSynchronize", rc);
    WITH_CONTEXT(c, driver.cuMemPoolTrimTo(c->mempool, keep_bytes));
    return checked(c, "cuMemPoolTrimTo", rc);
}

nf_status nf_backend_cuda_pool_create(int ordinal, bool peer_access, nf_log_fn log, void *log_user,
                                      nf_backend **backend_out) {
    if (!backend_out) return NF_ERR_INVALID_ARG;
    *backend_out = NULL;
    nf_status s = device_open_with(ordinal, CU_DEVICE_ATTRIBUTE_MEMORY_POOLS_SUPPORTED,
                                   "cuda-pool backend: device lacks memory pools (%s, %d)", log, log_user);
    if (s != NF_OK) return s;
    CUresult rc;
    cuda_ctx *c;
    if ((s = ctx_open(ordinal, log, log_user, &c)) != NF_OK) return s;
    CUmemPoolProps props;
    memset(&props, 0, sizeof props);
    props.allocType = CU_MEM_ALLOCATION_TYPE_PINNED;
    props.handleTypes = CU_MEM_HANDLE_TYPE_NONE;
    props.location.type = CU_MEM_LOCATION_TYPE_DEVICE;
    props.location.id = c->device;
    WITH_CONTEXT(c, driver.cuMemPoolCreate(&c->mempool, &props));
    if (rc == CUDA_SUCCESS) { /* keep freed memory until a trim, rather than at every synchronisation */
        cuuint64_t threshold = UINT64_MAX;
        WITH_CONTEXT(c, driver.cuMemPoolSetAttribute(c->mempool, CU_MEMPOOL_ATTR_RELEASE_THRESHOLD, &threshold));
        if (rc != CUDA_SUCCESS) driver.cuMemPoolDestroy(c->mempool);
    }
    nf_backend *b = rc == CUDA_SUCCESS ? table_new(c, "cuda-pool", NF_BACKEND_CAP_PLACES_BLOCKS) : NULL;
    if (!b) {
        if (rc != CUDA_SUCCESS)
            report(log, log_user, "cuda-pool backend: making the memory pool failed: %s (%d)", result_name(rc), (int)rc);
        else
            driver.cuMemPoolDestroy(c->mempool);
        driver.cuDevicePrimaryCtxRelease(c->device);
        free(c);
        return rc != CUDA_SUCCESS ? NF_ERR_BACKEND : NF_ERR_NO_MEMORY_HOST;
    }
    b->block_alloc = pool_block_alloc;
    b->block_free = pool_block_free;
    b->held_bytes = pool_held_bytes;
    b->trim_to = pool_trim_to;
    if (peer_access && cuda_add_peers(c, -1) != 0) {
        cuda_destroy(b);
        return NF_ERR_BACKEND;
    }
    *backend_out = b;
    return NF_OK;
}

nf_status nf_cuda_mem_info(int ordinal, uint64_t *free_out, uint64_t *total_out) {
    if (!free_out || !total_out) return NF_ERR_INVALID_ARG;
    CUdevice device;
    nf_status s = device_open(ordinal, &device, NULL, NULL);
    if (s != NF_OK) return s;
    cuda_ctx c = {.device = device};
    CUresult rc = driver.cuDevicePrimaryCtxRetain(&c.primary, device);
    if (rc != CUDA_SUCCESS) return NF_ERR_BACKEND;
    size_t free_bytes = 0, total_bytes = 0;
    WITH_CONTEXT(&c, driver.cuMemGetInfo(&free_bytes, &total_bytes));
    driver.cuDevicePrimaryCtxRelease(device);
    if (rc != CUDA_SUCCESS) return NF_ERR_BACKEND;
    *free_out = free_bytes;
    *total_out = total_bytes;
    return NF_OK;
}

#else /* no cuda.h at build time */

nf_status nf_backend_cuda_create(int device, bool peer_access, nf_log_fn log, void *log_user,
                                 nf_backend **backend_out) {
    (void)device;
    (void)peer_access;
    if (log) log(log_user, NF_LOG_ERROR, "cuda backend: this nofrag was built without cuda.h");
    if (backend_out) *backend_out = NULL;
    return backend_out ? NF_ERR_UNSUPPORTED : NF_ERR_INVALID_ARG;
}

nf_status nf_backend_cuda_pool_create(int device, bool peer_access, nf_log_fn log, void *log_user,
                                      nf_backend **backend_out) {
    return nf_backend_cuda_create(device, peer_access, log, log_user, backend_out);
}

nf_status nf_cuda_mem_info(int device, uint64_t *free_out, uint64_t *total_out) {
    (void)device;
    if (!free_out || !total_out) return NF_ERR_INVALID_ARG;
    return NF_ERR_UNSUPPORTED;
}

#endif
