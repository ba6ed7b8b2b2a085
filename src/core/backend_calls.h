/*
 * Every backend primitive goes through these wrappers: they count the call in the pool's stats and
 * turn a failure into NF_ERR_BACKEND with a log message naming the call and its arguments.
 */
#ifndef NOFRAG_BACKEND_CALLS_H
#define NOFRAG_BACKEND_CALLS_H

#include "pool_internal.h"

nf_status call_reserve(nf_pool *pool, uint64_t bytes, uint64_t *base_out);
nf_status call_unreserve(nf_pool *pool, uint64_t base, uint64_t bytes);
/* `pages`: the size of the physical allocation or of the mapped range, in pool pages (each is
 * pool->backend_pages of the backend's granules). call_page_create returns NF_ERR_OUT_OF_MEMORY,
 * not logged, when the backend has no memory for the page (NF_BACKEND_OUT_OF_MEMORY). */
nf_status call_page_create(nf_pool *pool, uint64_t pages, uint64_t *handle_out);
nf_status call_page_release(nf_pool *pool, uint64_t handle);
nf_status call_map(nf_pool *pool, uint64_t va, uint64_t pages, uint64_t handle);
nf_status call_unmap(nf_pool *pool, uint64_t va, uint64_t pages);
nf_status call_set_access(nf_pool *pool, uint64_t va, uint64_t pages);
/* pre: the backend has add_peers. Not counted among the calls: it is made once a device, at most. */
nf_status call_add_peers(nf_pool *pool, int device);
nf_status call_event_record(nf_pool *pool, void *stream, uint64_t *event_out);
/* *done_out: whether the event's work has completed. */
nf_status call_event_query(nf_pool *pool, uint64_t event, bool *done_out);
nf_status call_event_sync(nf_pool *pool, uint64_t event);
nf_status call_event_release(nf_pool *pool, uint64_t event);
nf_status call_stream_wait(nf_pool *pool, void *stream, uint64_t event);
/* Block backends. call_block_alloc returns NF_ERR_OUT_OF_MEMORY, not logged, when the device
 * has no room (NF_BACKEND_OUT_OF_MEMORY). call_held_bytes is timed but not counted as a call: it
 * reads a figure the driver keeps. */
nf_status call_block_alloc(nf_pool *pool, uint64_t bytes, void *stream, uint64_t *addr_out);
nf_status call_block_free(nf_pool *pool, uint64_t addr, void *stream);
nf_status call_held_bytes(nf_pool *pool, uint64_t *bytes_out);
nf_status call_trim_to(nf_pool *pool, uint64_t keep_bytes);

#endif
