// Times the CUDA virtual-memory calls the pool makes, for physical allocations and mappings of
// 1 to 256 pages in one call, and checks which partial mappings the driver accepts. The replayer's
// cost model (docs/cost-model.md) charges what this prints.
//   gpu_vmm_cost [device]      prints one JSON object per line
#include <cuda.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <vector>

static void check(CUresult rc, const char *what) {
    if (rc == CUDA_SUCCESS) return;
    const char *name = "?";
    cuGetErrorName(rc, &name);
    std::fprintf(stderr, "%s failed: %s\n", what, name);
    std::exit(1);
}

static double now_us() {
    return std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

static double median(std::vector<double> v) {
    std::sort(v.begin(), v.end());
    return v[v.size() / 2];
}

int main(int argc, char **argv) {
    int ordinal = argc > 1 ? std::atoi(argv[1]) : 0;
    if (cuInit(0) != CUDA_SUCCESS) {
        std::fprintf(stderr, "no CUDA device: skipped\n");
        return 77;
    }
    CUdevice dev;
    CUcontext ctx;
    check(cuDeviceGet(&dev, ordinal), "cuDeviceGet");
    check(cuDevicePrimaryCtxRetain(&ctx, dev), "cuDevicePrimaryCtxRetain");
    check(cuCtxSetCurrent(ctx), "cuCtxSetCurrent");

    CUmemAllocationProp prop = {};
    prop.type = CU_MEM_ALLOCATION_TYPE_PINNED;
    prop.location.type = CU_MEM_LOCATION_TYPE_DEVICE;
    prop.location.id = ordinal;
    size_t gran = 0;
    check(cuMemGetAllocationGranularity(&gran, &prop, CU_MEM_ALLOC_GRANULARITY_MINIMUM), "granularity");
    CUmemAccessDesc access = {};
    access.location = prop.location;
    access.flags = CU_MEM_ACCESS_FLAGS_PROT_READWRITE;

    const size_t max_pages = 256;
    CUdeviceptr base;
    check(cuMemAddressReserve(&base, 2 * max_pages * gran, gran, 0, 0), "cuMemAddressReserve");

    const int reps = 15;
    for (size_t pages : {1, 4, 16, 64, 256}) {
        size_t bytes = pages * gran;
        std::vector<double> create, map, access_t, unmap, release;
        for (int r = 0; r < reps; r++) {
            CUmemGenericAllocationHandle h;
            double t0 = now_us();
            check(cuMemCreate(&h, bytes, &prop, 0), "cuMemCreate");
            double t1 = now_us();
            check(cuMemMap(base, bytes, 0, h, 0), "cuMemMap");
            double t2 = now_us();
            check(cuMemSetAccess(base, bytes, &access, 1), "cuMemSetAccess");
            double t3 = now_us();
            check(cuMemUnmap(base, bytes), "cuMemUnmap");
            double t4 = now_us();
            check(cuMemRelease(h), "cuMemRelease");
            double t5 = now_us();
            create.push_back(t1 - t0);
            map.push_back(t2 - t1);
            access_t.push_back(t3 - t2);
            unmap.push_back(t4 - t3);
            release.push_back(t5 - t4);
        }
        std::printf("{\"pages\": %zu, \"create_us\": %.1f, \"map_us\": %.1f, \"set_access_us\": %.1f, "
                    "\"unmap_us\": %.1f, \"release_us\": %.1f}\n",
                    pages, median(create), median(map), median(access_t), median(unmap), median(release));
    }

    // Unmapping k adjacent one-page mappings: one call over all of them, against k calls.
    for (size_t k : {1, 4, 16, 64}) {
        std::vector<CUmemGenericAllocationHandle> hs(k);
        for (auto &h : hs) check(cuMemCreate(&h, gran, &prop, 0), "cuMemCreate");
        std::vector<double> one_call, k_calls;
        for (int r = 0; r < reps; r++) {
            for (int mode = 0; mode < 2; mode++) {
                for (size_t i = 0; i < k; i++) check(cuMemMap(base + i * gran, gran, 0, hs[i], 0), "cuMemMap");
                check(cuMemSetAccess(base, k * gran, &access, 1), "cuMemSetAccess");
                double t0 = now_us();
                if (mode == 0) {
                    check(cuMemUnmap(base, k * gran), "cuMemUnmap run");
                } else {
                    for (size_t i = 0; i < k; i++) check(cuMemUnmap(base + i * gran, gran), "cuMemUnmap");
                }
                (mode == 0 ? one_call : k_calls).push_back(now_us() - t0);
            }
        }
        for (auto h : hs) cuMemRelease(h);
        std::printf("{\"mappings\": %zu, \"unmap_one_call_us\": %.1f, \"unmap_one_call_each_us\": %.1f}\n", k,
                    median(one_call), median(k_calls));
    }

    // Partial mappings: one page of a 4-page allocation at offset 0 and at offset 2 pages, and
    // unmapping one page out of a 4-page mapping.
    CUmemGenericAllocationHandle h;
    check(cuMemCreate(&h, 4 * gran, &prop, 0), "cuMemCreate");
    CUresult part0 = cuMemMap(base, gran, 0, h, 0);
    if (part0 == CUDA_SUCCESS) cuMemUnmap(base, gran);
    CUresult part2 = cuMemMap(base, gran, 2 * gran, h, 0);
    if (part2 == CUDA_SUCCESS) cuMemUnmap(base, gran);
    check(cuMemMap(base, 4 * gran, 0, h, 0), "cuMemMap whole");
    CUresult sub_unmap = cuMemUnmap(base + gran, gran);
    if (sub_unmap != CUDA_SUCCESS) check(cuMemUnmap(base, 4 * gran), "cuMemUnmap whole");
    // Setting access over two separate mappings in one call.
    CUmemGenericAllocationHandle h2;
    check(cuMemCreate(&h2, gran, &prop, 0), "cuMemCreate");
    CUresult two = CUDA_ERROR_UNKNOWN;
    if (sub_unmap == CUDA_SUCCESS) {
        cuMemUnmap(base, gran);
        cuMemUnmap(base + 2 * gran, 2 * gran);
    }
    check(cuMemMap(base, gran, 0, h2, 0), "cuMemMap a");
    check(cuMemMap(base + gran, 4 * gran, 0, h, 0), "cuMemMap b");
    two = cuMemSetAccess(base, 5 * gran, &access, 1);
    // Unmapping both mappings in one call.
    CUresult unmap_two = cuMemUnmap(base, 5 * gran);
    if (unmap_two != CUDA_SUCCESS) {
        cuMemUnmap(base, gran);
        cuMemUnmap(base + gran, 4 * gran);
    }
    cuMemRelease(h);
    cuMemRelease(h2);
    const char *n0 = "", *n2 = "", *nu = "", *nt = "", *nw = "";
    cuGetErrorName(unmap_two, &nw);
    cuGetErrorName(part0, &n0);
    cuGetErrorName(part2, &n2);
    cuGetErrorName(sub_unmap, &nu);
    cuGetErrorName(two, &nt);
    int driver = 0;
    cuDriverGetVersion(&driver);
    std::printf("{\"driver_version\": %d, \"granularity\": %zu, \"map_first_page_of_4\": \"%s\", "
                "\"map_page_at_offset_2_of_4\": \"%s\", \"unmap_one_page_of_4_page_mapping\": \"%s\", "
                "\"set_access_across_two_mappings\": \"%s\", \"unmap_across_two_mappings\": \"%s\"}\n",
                driver, gran, n0, n2, nu, nt, nw);
    cuMemAddressFree(base, 2 * max_pages * gran);
    cuDevicePrimaryCtxRelease(dev);
    return 0;
}
