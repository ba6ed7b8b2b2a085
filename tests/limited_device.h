/* A host backend that plays a device of limited size, for tests of what the pool does when the
 * device has no memory for a page (test_device_full, test_reserve): page_create refuses with
 * NF_BACKEND_OUT_OF_MEMORY once limited_device_pages would be exceeded, and counts its calls.
 * The pools of these tests use the backend's granularity as their page, so every handle is one
 * page. One such device a test program. */
#ifndef NOFRAG_TEST_LIMITED_DEVICE_H
#define NOFRAG_TEST_LIMITED_DEVICE_H

#include "check.h"

static nf_backend *limited_inner;                  /* the real host backend underneath */
static uint64_t limited_device_pages = UINT64_MAX; /* pages the "device" can hold */
static uint64_t limited_live_pages;                /* pages created and not released */
static int limited_create_calls;                   /* page_create calls, refused ones included */

static int limited_page_create(void *c, uint64_t pages, uint64_t *handle_out) {
    limited_create_calls++;
    if (limited_live_pages + pages > limited_device_pages) return NF_BACKEND_OUT_OF_MEMORY;
    int rc = limited_inner->page_create(c, pages, handle_out);
    if (!rc) limited_live_pages += pages;
    return rc;
}

static int limited_page_release(void *c, uint64_t handle) {
    int rc = limited_inner->page_release(c, handle);
    if (!rc) limited_live_pages--; /* one page a handle (above) */
    return rc;
}

/* The limited device's table over a new real-memory host backend of granularity gran. */
static inline nf_backend limited_device(uint64_t gran) {
    REQUIRE(nf_backend_host_create(true, gran, &limited_inner) == NF_OK);
    nf_backend wrapped = *limited_inner;
    wrapped.page_create = limited_page_create;
    wrapped.page_release = limited_page_release;
    return wrapped;
}

#endif
