/* Phases (nf_phase_mark / nf_phase_return): training steps, then an evaluation-like phase whose
 * live peak is three times theirs, then training again, on real host memory.
 *   - after the phase's frees the pool still holds the phase's memory (what the API is for);
 *   - nf_phase_return gives back all of it but the pages of a block the phase left live;
 *   - the training steps after it make no page beyond the mark's (growth forgot the phase's peak)
 *     and every live block keeps its bytes; the invariants hold after every operation;
 *   - over CUDA's memory pool's stand-in the cache goes back the same way; a pinned pool gives back
 *     nothing; bad arguments are refused. */
#include <string.h>

#include "check.h"

enum { GRAN = 64 * 1024, TRAIN_BLOCKS = 12, EVAL_BLOCKS = 36 };

typedef struct live_block {
    unsigned char *ptr;
    size_t size;
    unsigned char fill;
} live_block;

static void put(nf_pool *pool, live_block *b, size_t size, unsigned char fill) {
    void *p = NULL;
    CHECK_OK(nf_alloc(pool, size, NULL, &p));
    b->ptr = p;
    b->size = size;
    b->fill = fill;
    if (p) memset(p, fill, size);
    CHECK_OK(nf_pool_check(pool));
}

static void drop(nf_pool *pool, live_block *b) {
    bool intact = true;
    for (size_t i = 0; i < b->size; i += 61) intact &= b->ptr[i] == b->fill;
    CHECK(intact);
    CHECK_OK(nf_free(pool, b->ptr, NULL));
    b->ptr = NULL;
    CHECK_OK(nf_pool_check(pool));
}

/* One step of work: TRAIN_BLOCKS blocks of 1-3 pages (sizes varying with the step), all freed. */
static void train_step(nf_pool *pool, int step) {
    live_block blocks[TRAIN_BLOCKS];
    for (int i = 0; i < TRAIN_BLOCKS; i++)
        put(pool, &blocks[i], (size_t)(1 + (i + step) % 3) * GRAN - 512 * (size_t)(step % 5), (unsigned char)(i + 1));
    for (int i = TRAIN_BLOCKS; i-- > 0;) drop(pool, &blocks[i]);
    CHECK_OK(nf_step_mark(pool));
}

static uint64_t held(nf_pool *pool) {
    nf_stats st;
    CHECK_OK(nf_stats_get(pool, &st));
    return st.reserved_bytes.current;
}

static void paged_pool(void) {
    test_pool_spec spec = {.real_memory = true, .gran = GRAN, .virtual_bytes = 4096ull * GRAN};
    nf_backend *be;
    nf_pool *pool = test_pool(&spec, &be);
    live_block weights;
    put(pool, &weights, 5 * GRAN, 0x77); /* lives through the whole job */
    for (int step = 0; step < 10; step++) train_step(pool, step);
    nf_phase mark;
    CHECK_OK(nf_phase_mark(pool, &mark));
    CHECK(mark.held_bytes == held(pool) && mark.live_peak >= 5 * GRAN);

    /* The phase: three times the training steps' live bytes, one block kept after it. */
    live_block eval[EVAL_BLOCKS], kept;
    for (int i = 0; i < EVAL_BLOCKS; i++) put(pool, &eval[i], (size_t)(1 + i % 3) * GRAN, (unsigned char)(0x40 + i));
    put(pool, &kept, 2 * GRAN, 0x55);
    for (int i = 0; i < EVAL_BLOCKS; i++) drop(pool, &eval[i]);
    uint64_t after_phase = held(pool);
    CHECK(after_phase >= mark.held_bytes + 40 * GRAN); /* without a return it all stays held */

    uint64_t released = 0;
    CHECK_OK(nf_phase_return(pool, &mark, &released));
    CHECK_OK(nf_pool_check(pool));
    CHECK(released == after_phase - held(pool));
    CHECK(held(pool) <= mark.held_bytes + 2 * GRAN); /* the mark, and at most the kept block's pages */

    /* Training again: no page beyond what the mark and the kept block hold is made. */
    nf_stats before, after;
    CHECK_OK(nf_stats_get(pool, &before));
    for (int step = 10; step < 30; step++) train_step(pool, step);
    CHECK_OK(nf_stats_get(pool, &after));
    CHECK(held(pool) <= mark.held_bytes + 2 * GRAN);
    CHECK(after.reserved_bytes.peak == before.reserved_bytes.peak); /* statistics peaks untouched */
    drop(pool, &kept);
    drop(pool, &weights);
    test_pool_close(pool, be);
}

static void block_backend_pool(void) {
    nf_backend *be;
    REQUIRE(nf_backend_host_pool_create(0, &be) == NF_OK);
    nf_config cfg = nf_config_default();
    cfg.log = test_log;
    nf_pool *pool;
    REQUIRE(nf_pool_create(&cfg, be, &pool) == NF_OK);
    live_block a;
    put(pool, &a, 3 * GRAN, 1);
    nf_phase mark;
    CHECK_OK(nf_phase_mark(pool, &mark));
    live_block eval[8];
    for (int i = 0; i < 8; i++) put(pool, &eval[i], (size_t)(i + 1) * GRAN, (unsigned char)(i + 2));
    for (int i = 0; i < 8; i++) drop(pool, &eval[i]);
    CHECK(held(pool) == mark.held_bytes + 36 * GRAN); /* the stand-in caches every freed block */
    uint64_t released = 0;
    CHECK_OK(nf_phase_return(pool, &mark, &released));
    CHECK(released == 36 * GRAN && held(pool) == mark.held_bytes);
    CHECK_OK(nf_pool_check(pool));
    drop(pool, &a);
    CHECK_OK(nf_pool_destroy(pool));
    nf_backend_destroy(be);
}

static void pinned_pool_and_bad_arguments(void) {
    nf_backend *be;
    REQUIRE(nf_backend_host_create(true, GRAN, &be) == NF_OK);
    nf_config cfg = nf_config_default();
    cfg.pin_pages = true;
    cfg.virtual_bytes = 256ull * GRAN;
    cfg.log = test_log;
    nf_pool *pool;
    REQUIRE(nf_pool_create(&cfg, be, &pool) == NF_OK);
    nf_phase mark;
    CHECK_OK(nf_phase_mark(pool, &mark));
    live_block b;
    put(pool, &b, 8 * GRAN, 9);
    drop(pool, &b);
    uint64_t released = 1;
    CHECK_OK(nf_phase_return(pool, &mark, &released));
    CHECK(released == 0 && held(pool) == 8 * GRAN); /* its pages stay where they are */
    CHECK_STATUS(nf_phase_mark(NULL, &mark), NF_ERR_INVALID_ARG);
    CHECK_STATUS(nf_phase_mark(pool, NULL), NF_ERR_INVALID_ARG);
    CHECK_STATUS(nf_phase_return(pool, NULL, &released), NF_ERR_INVALID_ARG);
    CHECK(released == 0);
    CHECK_STATUS(nf_phase_return(NULL, &mark, NULL), NF_ERR_INVALID_ARG);
    test_pool_close(pool, be);
}

int main(void) {
    paged_pool();
    block_backend_pool();
    pinned_pool_and_bad_arguments();
    return check_exit("test_phases");
}
