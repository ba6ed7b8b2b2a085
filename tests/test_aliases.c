/* White-box: which mapping of a physical page gives way when the page, mapped at every place it
 * may be (MAX_ALIASES in pages.c), must serve yet another place. The oldest must go: the places
 * mapped most recently are the ones the job's current steps use. Drives the page layer directly
 * (pages_acquire / pages_release), so the block layer's placement cannot pick other places. */
#include "check.h"
#include "pages.h"

enum { PLACES = 5 }; /* one more than a physical page may be mapped at */

int main(void) {
    const uint64_t G = 64 * 1024;
    nf_backend *be;
    /* A cap of one page: every place below is served by the same physical page. */
    nf_pool *pool = test_host_pool(G, G, 16 * G, NULL, &be);
    REQUIRE(pool != NULL);
    for (uint64_t place = 0; place < PLACES; place++) {
        bool reused = false;
        CHECK_OK(pages_acquire(pool, pool->base + place * G, G, 0, &reused));
        CHECK(reused == (place > 0)); /* the first place made the page; the rest moved it */
        pages_release(pool, pool->base + place * G, G, 0, 0);
        CHECK(pool->phys_count == 1);
    }
    int32_t only = pool->pages[PLACES - 1].phys;
    CHECK(only != NF_NO_PAGE);
    CHECK(pool->phys[only].aliases == PLACES - 1);
    /* The first place, mapped longest ago, lost its mapping; the others keep theirs. */
    CHECK(pool->pages[0].phys == NF_NO_PAGE);
    for (uint64_t place = 1; place < PLACES; place++) CHECK(pool->pages[place].phys == only);
    CHECK_OK(pages_check(pool));
    test_pool_close(pool, be);
    return check_exit("test_aliases");
}
