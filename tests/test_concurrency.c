/* Several threads allocating and freeing on one pool (each on its own stream), on real memory,
 * each block stamped and verified so a race that hands one range to two threads is caught. One of
 * them also grants peers access now and then (nf_pool_enable_peer_access: set_access again over
 * every mapped run while the others use their blocks). */
#include <pthread.h>
#include <string.h>

#include "check.h"

enum { THREADS = 6, OPS = 20000, SLOTS = 64, LOCKSTEP = 500 };

/* Every LOCKSTEP operations the threads wait for each other, so that their live blocks overlap in
 * time however the scheduler runs them (a loaded machine may otherwise run them one after another,
 * and then no thread ever needs another's pages). */
static pthread_barrier_t lockstep;

/* The host backend has no peers; this add_peers only counts (under the pool's lock). */
static unsigned long peer_grants;
static int count_peer_grant(void *ctx, int device) {
    (void)ctx;
    (void)device;
    peer_grants++;
    return 0;
}

typedef struct worker {
    nf_pool *pool;
    uint64_t seed;
    uint64_t corrupt;
    uint64_t failures;
    uint64_t errors;
} worker;

static void *work(void *arg) {
    worker *w = arg;
    uint64_t rng = w->seed;
    void *stream = (void *)(uintptr_t)(w->seed & 0xff);
    uint64_t *ptr[SLOTS] = {0};
    size_t words[SLOTS] = {0};
    uint64_t stamp[SLOTS] = {0};
    for (int op = 0; op < OPS; op++) {
        int i = (int)rng_below(&rng, SLOTS);
        if (ptr[i]) {
            for (size_t k = 0; k < words[i]; k += 61) w->corrupt += ptr[i][k] != stamp[i] + k;
            if (nf_free(w->pool, ptr[i], stream) != NF_OK) w->errors++;
            ptr[i] = NULL;
        } else {
            size_t bytes = 8 * (1 + rng_below(&rng, rng_below(&rng, 8) ? 1024 : 65536));
            void *p;
            nf_status s = nf_alloc(w->pool, bytes, stream, &p);
            if (s == NF_ERR_OUT_OF_MEMORY) {
                w->failures++;
                continue;
            }
            if (s != NF_OK) {
                w->errors++;
                continue;
            }
            ptr[i] = p;
            words[i] = bytes / 8;
            stamp[i] = rng_next(&rng);
            for (size_t k = 0; k < words[i]; k += 61) ptr[i][k] = stamp[i] + k;
        }
        if (op % 5000 == 0) nf_step_mark(w->pool);
        if (w->seed == 1000 && op % 2500 == 1250 && nf_pool_enable_peer_access(w->pool, 1) != NF_OK) w->errors++;
        if (op % LOCKSTEP == LOCKSTEP - 1) pthread_barrier_wait(&lockstep);
    }
    for (int i = 0; i < SLOTS; i++)
        if (ptr[i] && nf_free(w->pool, ptr[i], stream) != NF_OK) w->errors++;
    return NULL;
}

int main(void) {
    nf_backend *be;
    REQUIRE(nf_backend_host_create(true, 64 * 1024, &be) == NF_OK);
    nf_backend with_peers = *be;
    with_peers.add_peers = count_peer_grant;
    nf_config cfg = nf_config_default();
    cfg.capacity = 24ull << 20; /* tight enough that threads reclaim each other's idle pages */
    cfg.log = test_log;
    nf_pool *pool;
    REQUIRE(nf_pool_create(&cfg, &with_peers, &pool) == NF_OK);
    REQUIRE(pthread_barrier_init(&lockstep, NULL, THREADS) == 0);
    pthread_t threads[THREADS];
    worker workers[THREADS];
    for (int t = 0; t < THREADS; t++) {
        workers[t] = (worker){.pool = pool, .seed = 1000 + (uint64_t)t};
        REQUIRE(pthread_create(&threads[t], NULL, work, &workers[t]) == 0);
    }
    uint64_t corrupt = 0, errors = 0, failures = 0;
    for (int t = 0; t < THREADS; t++) {
        pthread_join(threads[t], NULL);
        corrupt += workers[t].corrupt;
        errors += workers[t].errors;
        failures += workers[t].failures;
    }
    pthread_barrier_destroy(&lockstep);
    CHECK(corrupt == 0);
    CHECK(errors == 0);
    CHECK_OK(nf_pool_check(pool));
    nf_stats st;
    CHECK_OK(nf_stats_get(pool, &st));
    CHECK(st.allocation.current == 0);
    CHECK(st.num_allocs == st.num_frees);
    CHECK(st.num_alloc_failures == failures);
    CHECK(st.num_steps == THREADS * (OPS / 5000));
    CHECK(st.num_remaps > 0); /* the threads really competed for pages */
    CHECK(peer_grants == OPS / 2500);
    printf("allocs %llu, failures %llu, remaps %llu\n", (unsigned long long)st.num_allocs,
           (unsigned long long)failures, (unsigned long long)st.num_remaps);
    test_pool_close(pool, be);
    return check_exit("test_concurrency");
}
