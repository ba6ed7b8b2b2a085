/* The host backend follows CUDA virtual memory's rules for physical allocations of several pages
 * (probed on an H200 by gpu/vmm_cost.cu): a handle is mapped only whole, a mapping is unmapped only
 * whole, and one set-access or one unmap may span several adjacent mappings. In real-memory mode a handle's contents are
 * the same at every place it is mapped. */
#include <string.h>

#include "check.h"

static void rules(bool real) {
    const uint64_t gran = 64 * 1024;
    nf_backend *be;
    REQUIRE(nf_backend_host_create(real, gran, &be) == NF_OK);
    uint64_t base, four, one;
    REQUIRE(be->reserve(be->ctx, 16 * gran, &base) == 0);
    CHECK(be->page_create(be->ctx, 0, &four) != 0);
    REQUIRE(be->page_create(be->ctx, 4, &four) == 0);
    REQUIRE(be->page_create(be->ctx, 1, &one) == 0);

    /* Part of a handle cannot be mapped. */
    CHECK(be->map(be->ctx, base, 3, four) != 0);
    CHECK(be->map(be->ctx, base, 5, four) != 0);
    /* Nor past the end of the reservation. */
    CHECK(be->map(be->ctx, base + 13 * gran, 4, four) != 0);
    CHECK(be->map(be->ctx, base, 4, four) == 0);
    /* No page of the range may be mapped already. */
    CHECK(be->map(be->ctx, base + 3 * gran, 1, one) != 0);
    CHECK(be->map(be->ctx, base + 4 * gran, 1, one) == 0);

    /* Access over both mappings in one call; not over an unmapped page. */
    CHECK(be->set_access(be->ctx, base, 5) == 0);
    CHECK(be->set_access(be->ctx, base, 6) != 0);

    /* Only whole mappings are unmapped, and every page of the range must be mapped. */
    CHECK(be->unmap(be->ctx, base + gran, 1) != 0);
    CHECK(be->unmap(be->ctx, base, 2) != 0);
    CHECK(be->unmap(be->ctx, base + 2 * gran, 3) != 0);
    CHECK(be->unmap(be->ctx, base, 6) != 0);
    /* A mapped handle is not released. */
    CHECK(be->page_release(be->ctx, four) != 0);

    /* The same handle at a second place: in real memory, one set of bytes. */
    CHECK(be->map(be->ctx, base + 8 * gran, 4, four) == 0);
    CHECK(be->set_access(be->ctx, base + 8 * gran, 4) == 0);
    if (real) {
        unsigned char *a = (unsigned char *)(uintptr_t)base, *b = (unsigned char *)(uintptr_t)(base + 8 * gran);
        for (uint64_t i = 0; i < 4 * gran; i += 4096) a[i] = (unsigned char)(i / 4096 + 1);
        int same = 1;
        for (uint64_t i = 0; i < 4 * gran; i += 4096) same &= b[i] == (unsigned char)(i / 4096 + 1);
        CHECK(same);
    }
    /* Two adjacent whole mappings in one call; the handle stays mapped at its second place. */
    CHECK(be->unmap(be->ctx, base, 5) == 0);
    CHECK(be->page_release(be->ctx, four) != 0);
    CHECK(be->set_access(be->ctx, base, 1) != 0);
    CHECK(be->unmap(be->ctx, base + 8 * gran, 4) == 0);
    CHECK(be->page_release(be->ctx, four) == 0);
    CHECK(be->page_release(be->ctx, one) == 0);
    CHECK(be->page_release(be->ctx, one) != 0);

    /* A released slot comes back for a larger handle with room for all of it. */
    uint64_t eight;
    REQUIRE(be->page_create(be->ctx, 8, &eight) == 0);
    CHECK(be->map(be->ctx, base, 8, eight) == 0);
    CHECK(be->set_access(be->ctx, base, 8) == 0);
    if (real) memset((void *)(uintptr_t)base, 0x5a, 8 * gran);
    CHECK(be->unmap(be->ctx, base, 8) == 0);
    CHECK(be->page_release(be->ctx, eight) == 0);
    CHECK(!nf_host_all_released(be)); /* the range is still reserved */
    CHECK(be->unreserve(be->ctx, base, 16 * gran) == 0);
    CHECK(nf_host_all_released(be));
    nf_backend_destroy(be);
}

int main(void) {
    rules(false);
    rules(true);
    return check_exit("test_host_backend");
}
