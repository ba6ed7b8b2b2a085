/* nf_pool_check must notice broken invariants: each case breaks one piece of internal state on a
 * consistent pool, expects NF_ERR_CORRUPT with a message naming the invariant, then repairs it. */
#include <string.h>

#include "check.h"
#include "pool_internal.h"

static char last[512];
static void keep(void *user, nf_log_level level, const char *message) {
    (void)user;
    (void)level;
    snprintf(last, sizeof last, "%s", message);
}

#define EXPECT_BROKEN(pool, tag)                                  \
    do {                                                          \
        last[0] = '\0';                                           \
        CHECK_STATUS(nf_pool_check(pool), NF_ERR_CORRUPT);        \
        CHECK(strstr(last, tag) != NULL);                         \
        if (!strstr(last, tag)) fprintf(stderr, "  got: %s\n", last); \
    } while (0)

int main(void) {
    const uint64_t G = 64 * 1024;
    nf_backend *be;
    nf_pool *pool = test_host_pool(G, 8 * G, 32 * G, keep, &be);
    void *a, *b, *c;
    CHECK_OK(nf_alloc(pool, G / 2, NULL, &a));
    CHECK_OK(nf_alloc(pool, 2 * G, NULL, &b));
    CHECK_OK(nf_alloc(pool, G, NULL, &c));
    CHECK_OK(nf_free(pool, b, NULL));
    CHECK_OK(nf_pool_check(pool));

    pool->stats.allocated_bytes.current += 512;
    EXPECT_BROKEN(pool, "I5");
    pool->stats.allocated_bytes.current -= 512;

    pool->pages[0].live_blocks++;
    EXPECT_BROKEN(pool, "I6");
    pool->pages[0].live_blocks--;

    pool->pages[0].no_access = 1; /* a live block on a page without access would fault */
    EXPECT_BROKEN(pool, "I7");
    pool->pages[0].no_access = 0;

    pool->idle_count++;
    EXPECT_BROKEN(pool, "I8");
    pool->idle_count--;

    pool->stats.reserved_bytes.current += G;
    EXPECT_BROKEN(pool, "I10");
    pool->stats.reserved_bytes.current -= G;

    block *first = pool->first;
    first->size += 512; /* blocks no longer tile the range */
    EXPECT_BROKEN(pool, "I1");
    first->size -= 512;

    CHECK_OK(nf_pool_check(pool));
    CHECK_OK(nf_free(pool, a, NULL));
    CHECK_OK(nf_free(pool, c, NULL));
    CHECK_OK(nf_pool_check(pool));
    CHECK_OK(nf_pool_destroy(pool));
    nf_backend_destroy(be);
    return check_exit("test_check_detects");
}
