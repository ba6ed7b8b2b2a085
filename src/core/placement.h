/*
 * Placement: which free block serves a request. Kept apart from pool.c so policies can change
 * without touching the page and stream machinery.
 */
#ifndef NOFRAG_PLACEMENT_H
#define NOFRAG_PLACEMENT_H

#include "pool_internal.h"

/* A free block (in the index) that stream `idx` may use now, and where in it to place `size` bytes
 * (*offset_out, a multiple of the alignment, offset + size <= block size) such that the pages they
 * cover can be backed under the cap; NULL if none. *claimed_out is set when the pages are already
 * acquired (pages_claim_in_place): the caller must not acquire them again, and undoes the claim
 * with pages_claim_undo if it cannot use the block after all. */
block *placement_find(nf_pool *pool, uint64_t size, uint32_t idx, uint64_t *offset_out, bool *claimed_out);

/* From pool.c, for policies. */
bool pool_block_usable_by(const nf_pool *pool, const block *b, uint32_t idx);

#endif
