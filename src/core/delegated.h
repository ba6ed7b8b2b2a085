/*
 * Pools over a block backend (delegated.c): the entry points of pool.c and stats.c turn here when
 * pool->delegated. Called with the pool's lock held.
 */
#ifndef NOFRAG_DELEGATED_H
#define NOFRAG_DELEGATED_H

#include "pool_internal.h"

/* Checks that the backend has the block primitives and the config asks nothing a block backend
 * cannot give (reserve_bytes, pin_pages: NF_ERR_INVALID_ARG); sets up the books. */
nf_status delegated_create(nf_pool *pool);
/* Frees every live block through the backend (the pool's memory goes with it). */
nf_status delegated_destroy(nf_pool *pool);
nf_status delegated_alloc(nf_pool *pool, uint64_t size, uint32_t idx, uint64_t group, void **ptr_out);
/* Frees live block b on stream idx; on failure b stays live. */
nf_status delegated_release(nf_pool *pool, block *b, uint32_t idx);
nf_status delegated_trim(nf_pool *pool, uint64_t keep_bytes, uint64_t *released_out);
nf_status delegated_set_capacity(nf_pool *pool, uint64_t cap_pages);
/* The invariants; reads what the backend holds afresh (the books follow). */
nf_status delegated_check(nf_pool *pool);
/* Reads what the backend holds into the statistics (nf_stats_get). */
nf_status delegated_refresh(nf_pool *pool);
nf_status delegated_walk(nf_pool *pool, nf_walk_fn visitor, void *user);

#endif
