/*
 * Bookkeeping cost: replays each trace's allocation sizes and order through nofrag's host
 * accounting pool (no cap: no page moves, so this times placement and metadata alone) and through
 * jemalloc (mallocx / dallocx) in the same run, alternating rounds, and prints ns per
 * alloc+free pair for each and their ratio (median of the rounds).
 *
 * usage: bench_bookkeeping [--rounds N] TRACE...
 */
#include <jemalloc/jemalloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "nofrag_backend.h"
#include "trace.h"

static double now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e9 + (double)ts.tv_nsec;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static uint64_t alloc_count(const trace *t) {
    uint64_t n = 0;
    for (uint64_t i = 0; i < t->event_count; i++) n += t->events[i].action == TRACE_ALLOC;
    return n;
}

static double run_nofrag(const trace *t, void **slots) {
    nf_backend *be;
    nf_pool *pool;
    nf_config cfg = nf_config_default();
    if (nf_backend_host_create(false, 0, &be) != NF_OK || nf_pool_create(&cfg, be, &pool) != NF_OK) {
        fprintf(stderr, "bench: cannot create a pool\n");
        exit(1);
    }
    double start = now_ns();
    for (uint64_t i = 0; i < t->event_count; i++) {
        const trace_event *e = &t->events[i];
        if (e->action == TRACE_ALLOC) {
            if (nf_alloc(pool, e->size, NULL, &slots[e->slot]) != NF_OK) exit(1);
        } else {
            nf_free(pool, slots[e->slot], NULL);
            slots[e->slot] = NULL;
        }
    }
    double ns = now_ns() - start;
    nf_pool_destroy(pool);
    nf_backend_destroy(be);
    return ns;
}

static double run_jemalloc(const trace *t, void **slots) {
    double start = now_ns();
    for (uint64_t i = 0; i < t->event_count; i++) {
        const trace_event *e = &t->events[i];
        if (e->action == TRACE_ALLOC) {
            if (!(slots[e->slot] = mallocx(e->size, 0))) exit(1);
        } else {
            dallocx(slots[e->slot], 0);
            slots[e->slot] = NULL;
        }
    }
    double ns = now_ns() - start;
    return ns;
}

int main(int argc, char **argv) {
    int rounds = 7, first = 1;
    if (argc > 2 && strcmp(argv[1], "--rounds") == 0) {
        rounds = atoi(argv[2]);
        first = 3;
    }
    if (first >= argc || rounds < 1) {
        fprintf(stderr, "usage: bench_bookkeeping [--rounds N] TRACE...\n");
        return 2;
    }
    printf("%-20s %10s %12s %12s %8s\n", "trace", "pairs", "nofrag ns", "jemalloc ns", "ratio");
    for (int a = first; a < argc; a++) {
        trace t;
        char err[512];
        if (trace_load(argv[a], &t, err, sizeof err)) {
            fprintf(stderr, "bench: %s\n", err);
            return 1;
        }
        void **slots = calloc(t.slot_count, sizeof *slots);
        double *nf = calloc((size_t)rounds, sizeof *nf), *je = calloc((size_t)rounds, sizeof *je);
        uint64_t pairs = alloc_count(&t);
        for (int r = 0; r < rounds; r++) {
            nf[r] = run_nofrag(&t, slots) / (double)pairs;
            memset(slots, 0, t.slot_count * sizeof *slots);
            je[r] = run_jemalloc(&t, slots) / (double)pairs;
            /* Free what the trace left live, outside the timed loop. */
            for (uint32_t s = 0; s < t.slot_count; s++) {
                if (slots[s]) dallocx(slots[s], 0);
                slots[s] = NULL;
            }
        }
        qsort(nf, (size_t)rounds, sizeof *nf, cmp_double);
        qsort(je, (size_t)rounds, sizeof *je, cmp_double);
        double n = nf[rounds / 2], j = je[rounds / 2];
        printf("%-20.20s %10llu %12.1f %12.1f %8.2f\n", t.name, (unsigned long long)pairs, n, j, n / j);
        free(nf);
        free(je);
        free(slots);
        trace_free(&t);
    }
    printf("ratio = nofrag / jemalloc ns per alloc+free pair (median of rounds); < 1 means nofrag is faster\n");
    return 0;
}
