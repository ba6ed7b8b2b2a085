/*
 * Replaying a loaded trace through a nofrag pool, and the figures the replayer reports.
 */
#ifndef NOFRAG_REPLAY_H
#define NOFRAG_REPLAY_H

#include <stdbool.h>
#include <stdio.h>

#include "nofrag.h"
#include "trace.h"

/* Steps before this index are warm-up; per-step figures average over the steps from here on. */
#define REPLAY_WARMUP_STEPS 3

typedef struct replay_options {
    uint64_t capacity;    /* bytes; 0: no cap */
    /* Host backend with real memory, and every block's bytes checked: a tag in each page it covers
     * (its first word, the first word of every page it starts past, its last word) is written at
     * allocation and compared at free (result.corrupt_words); with stream_lag, each by a simulated
     * kernel on the block's stream (tools/replay.c, tag_checker). */
    bool real_memory;
    uint64_t granularity; /* host backend's granularity; 0: 2 MiB, CUDA's */
    uint64_t page_bytes;  /* the pool's page size (nf_config.page_bytes); 0: the granularity */
    uint64_t pair_min_pages; /* nf_config.pair_min_pages: blocks of this many pages or more take pairs */
    bool hold_near_live;  /* nf_config.hold_near_live: under the cap, grow only with the live peak */
    bool reuse_across_streams; /* nf_config.reuse_across_streams (the PyTorch front end's default) */
    /* Host backend only: 0, every stream's work is done by the time the pool asks (the default);
     * N > 0, each stream's work completes N trace events after it was queued, as on a GPU that
     * runs behind the host, so frees are not known done at once and the pool asks, waits on the
     * device or on the host as it would there. */
    uint64_t stream_lag;
    bool progress;        /* draw a progress line on stderr */
    int cuda_device;      /* >= 0: replay on this GPU through the CUDA backend (real memory) */
    bool cuda_pool;       /* with cuda_device: through CUDA's own memory pool (the block backend,
                           * nf_backend_cuda_pool_create): what CUDA's placement holds */
    bool per_step;        /* record backend calls and remaps of every step (result.step_*) */
    FILE *layout_log;     /* if set: every placement, free and step mark, for layout studies
                           * (bench/physical_oracle.py reads it; format in tools/replay.c) */
    uint64_t check_every; /* > 0: nf_pool_check (every invariant) after every check_every events
                           * and at the end; a broken one stops the replay (NF_ERR_CORRUPT) */
    bool log;             /* the pool's messages at log_level or more severe go to stderr */
    nf_log_level log_level;
} replay_options;

/* What one step cost: backend calls, page remaps, estimated driver time; and the live peak so far
 * at its end, so that the steps which raised it (and must map pages at places never used) can be
 * told from the others. */
typedef struct replay_step {
    uint64_t calls;
    uint64_t remaps;
    double driver_us;
    uint64_t live_peak;
} replay_step;

typedef struct replay_result {
    nf_status status;      /* NF_OK unless the pool itself failed (not an out-of-memory) */
    uint64_t events;
    uint64_t failed_allocs;
    uint64_t corrupt_words; /* with options.real_memory: tags found changed at a block's free */
    uint64_t checked_words; /* ... and tags compared */
    uint64_t skipped_checks; /* ... and blocks not checked: freed before their stream wrote them */
    nf_stats stats;        /* at the end */
    nf_stats window_start; /* at the start of step REPLAY_WARMUP_STEPS (or the beginning) */
    uint32_t window_steps; /* steps in the per-step window (at least 1) */
    double seconds;        /* wall time of the replay loop */
    double remaps_per_step;
    double driver_calls_per_step;
    double est_driver_us_per_step;
    double est_driver_us_total;
    /* How long the recorded job's steps in the window took, by the trace's timestamps (from the
     * window's first step to the last row, over window_steps); 0 without step marks or times. */
    double recorded_step_us;
    nf_stats window; /* counters over the per-step window (end minus window_start) */
    /* With options.per_step: step_slots records, index 0 = making the pool and the events before
     * the first step mark, then one per step. Freed by replay_result_free. */
    uint32_t step_slots;
    replay_step *steps;
} replay_result;

/* The cost of each backend primitive in microseconds, from CUDA measurements on an H200
 * (docs/cost-model.md). */
double replay_cost_us(const nf_stats *delta_calls);

/* Replays t under opts. Returns 0, or -1 with a message in err when the pool could not be made. */
int replay_run(const trace *t, const replay_options *opts, replay_result *result, char *err, size_t err_size);

void replay_result_free(replay_result *result);

/* The smallest capacity (a multiple of the granularity) under which t replays with no failed
 * allocation, by bisection. Returns 0, or -1 with a message in err. */
int replay_min_capacity(const trace *t, const replay_options *opts, uint64_t *min_capacity_out,
                        char *err, size_t err_size);

#endif
