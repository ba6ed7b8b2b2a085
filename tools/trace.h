/*
 * Allocation traces in RMM's logging_resource_adaptor CSV format
 * (Thread,Time,Action,Pointer,Size,Stream), gzip-compressed or plain, with an optional NAME.steps
 * sidecar listing the data row where each training step starts.
 *
 * A trace is loaded whole and resolved before replay: each allocation gets a slot (a small integer
 * reused once its block is freed), so replaying needs no pointer lookups of its own.
 */
#ifndef NOFRAG_TRACE_H
#define NOFRAG_TRACE_H

#include <stddef.h>
#include <stdint.h>

typedef enum { TRACE_ALLOC = 0, TRACE_FREE = 1 } trace_action;

typedef struct trace_event {
    uint64_t size;   /* bytes, as logged */
    uint32_t slot;   /* the allocation this event creates or ends */
    uint16_t stream; /* index into trace.streams */
    uint8_t action;  /* trace_action */
} trace_event;

typedef struct trace {
    char *path;
    char *name;           /* file name without directories and the .csv / .csv.gz suffix */
    trace_event *events;
    uint64_t event_count;
    uint32_t slot_count;  /* most allocations live at once */
    uint64_t *step_starts; /* event index where each step starts (from the .steps sidecar) */
    uint64_t *step_times_us; /* the Time of each step's first row, in microseconds (counting on
                                across midnight): how long the recorded job's steps took */
    uint32_t step_count;
    uint64_t last_time_us; /* the Time of the last row, on the same scale */
    uint64_t *streams;    /* stream values as logged (hex) */
    uint32_t stream_count;
    uint64_t peak_live;   /* most bytes live at once */
    uint64_t skipped_rows; /* rows that record no change (RMM's "allocate failure") */
    /* From the NAME.pytorch sidecar (0: none): PyTorch's own allocator's peaks while the job was
     * recorded (torch.cuda.max_memory_allocated / max_memory_reserved). */
    uint64_t pytorch_allocated_peak;
    uint64_t pytorch_reserved_peak;
    /* The same under expandable_segments:True, where a second run measured it (0: not). */
    uint64_t expandable_allocated_peak;
    uint64_t expandable_reserved_peak;
} trace;

/* Loads `path`. On failure returns -1 and writes "FILE:LINE: what is wrong" into err. */
int trace_load(const char *path, trace *out, char *err, size_t err_size);
void trace_free(trace *t);

#endif
