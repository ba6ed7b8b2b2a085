#include "trace.h"

#include <ctype.h>
#include <errno.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

/* zlib reads gzip and plain files alike. Without it (a build machine lacking zlib's headers) plain
 * CSV still works through stdio, and a gzip file gets a clear error. */
#ifdef NOFRAG_HAVE_ZLIB
#include <zlib.h>
#else
typedef FILE *gzFile;
#define Z_OK 0
#define Z_STREAM_END 1
static gzFile gzopen(const char *path, const char *mode) { return fopen(path, mode); }
static void gzbuffer(gzFile f, unsigned size) { (void)f; (void)size; }
static char *gzgets(gzFile f, char *buf, int len) { return fgets(buf, len, f); }
static int gzeof(gzFile f) { return feof(f); }
static int gzclose(gzFile f) { return fclose(f); }
static const char *gzerror(gzFile f, int *err) {
    *err = ferror(f) ? -1 : Z_OK;
    return *err ? "read error" : "";
}
#endif

static const char HEADER[] = "Thread,Time,Action,Pointer,Size,Stream";
/* How far back a row's Time may lie behind the previous row's (threads logging at once). */
enum { MAX_TIME_BACKSTEP_US = 1000000 };
enum { MAX_LINE = 1024, MAX_STREAMS = 65535 };

typedef struct loader {
    const char *path;
    uint64_t line;
    char *err;
    size_t err_size;
    /* live pointer -> slot, open addressing with backward-shift deletion */
    uint64_t *keys;
    uint32_t *slots;
    uint64_t *sizes; /* size of the allocation in each slot */
    uint64_t map_capacity, map_count;
    uint32_t *free_slots;
    uint32_t free_count, free_capacity;
    uint64_t sizes_capacity;
} loader;

/* Writes "PATH:LINE: message" into the loader's error buffer ("PATH: message" for line 0: an
 * error about the whole file). */
static int fail(loader *ld, const char *fmt, ...) {
    int n = ld->line ? snprintf(ld->err, ld->err_size, "%s:%llu: ", ld->path, (unsigned long long)ld->line)
                     : snprintf(ld->err, ld->err_size, "%s: ", ld->path);
    va_list ap;
    va_start(ap, fmt);
    if (n >= 0 && (size_t)n < ld->err_size) vsnprintf(ld->err + n, ld->err_size - (size_t)n, fmt, ap);
    va_end(ap);
    return -1;
}

static uint64_t hash(uint64_t k, uint64_t cap) {
    k ^= k >> 31;
    k *= 0x9e3779b97f4a7c15ull;
    k ^= k >> 29;
    return k & (cap - 1);
}

static bool map_grow(loader *ld) {
    uint64_t cap = ld->map_capacity ? ld->map_capacity * 2 : 4096;
    uint64_t *keys = calloc(cap, sizeof *keys);
    uint32_t *slots = calloc(cap, sizeof *slots);
    if (!keys || !slots) {
        free(keys);
        free(slots);
        return false;
    }
    for (uint64_t i = 0; i < ld->map_capacity; i++) {
        if (!ld->keys[i]) continue;
        uint64_t j = hash(ld->keys[i], cap);
        while (keys[j]) j = (j + 1) & (cap - 1);
        keys[j] = ld->keys[i];
        slots[j] = ld->slots[i];
    }
    free(ld->keys);
    free(ld->slots);
    ld->keys = keys;
    ld->slots = slots;
    ld->map_capacity = cap;
    return true;
}

/* Pointers are stored +1 so that 0 marks an empty slot even for a logged pointer of 0. */
static uint64_t *map_find(loader *ld, uint64_t ptr) {
    uint64_t key = ptr + 1, i = hash(key, ld->map_capacity);
    while (ld->keys[i]) {
        if (ld->keys[i] == key) return &ld->keys[i];
        i = (i + 1) & (ld->map_capacity - 1);
    }
    return NULL;
}

static void map_remove(loader *ld, uint64_t *key_at) {
    uint64_t mask = ld->map_capacity - 1, hole = (uint64_t)(key_at - ld->keys);
    for (uint64_t j = (hole + 1) & mask; ld->keys[j]; j = (j + 1) & mask) {
        uint64_t home = hash(ld->keys[j], ld->map_capacity);
        bool in_range = hole <= j ? (home > hole && home <= j) : (home > hole || home <= j);
        if (!in_range) {
            ld->keys[hole] = ld->keys[j];
            ld->slots[hole] = ld->slots[j];
            hole = j;
        }
    }
    ld->keys[hole] = 0;
    ld->map_count--;
}

static bool parse_u64(const char *s, int base, uint64_t *out) {
    if (!*s || isspace((unsigned char)*s) || *s == '-' || *s == '+') return false;
    errno = 0;
    char *end;
    unsigned long long v = strtoull(s, &end, base);
    if (errno || *end) return false;
    *out = v;
    return true;
}

/* HH:MM:SS.ffffff -> microseconds since midnight. */
static bool parse_time(const char *s, uint64_t *us_out) {
    unsigned h, m, sec;
    int n = 0;
    if (sscanf(s, "%2u:%2u:%2u%n", &h, &m, &sec, &n) != 3 || n != 8 || h > 23 || m > 59 || sec > 60)
        return false;
    uint64_t frac = 0, scale = 1000000;
    const char *p = s + 8;
    if (*p == '.') {
        p++;
        if (!isdigit((unsigned char)*p)) return false;
        while (isdigit((unsigned char)*p)) {
            if (scale > 1) {
                scale /= 10;
                frac += (uint64_t)(*p - '0') * scale;
            }
            p++;
        }
    }
    if (*p) return false;
    *us_out = ((uint64_t)h * 3600 + m * 60 + sec) * 1000000 + frac;
    return true;
}

static char *trace_name(const char *path) {
    const char *base = strrchr(path, '/');
    base = base ? base + 1 : path;
    char *name = strdup(base);
    if (!name) return NULL;
    size_t n = strlen(name);
    if (n > 3 && strcmp(name + n - 3, ".gz") == 0) name[n -= 3] = '\0';
    if (n > 4 && strcmp(name + n - 4, ".csv") == 0) name[n -= 4] = '\0';
    return name;
}

/* The path of the trace's sidecar with `suffix` (".steps", ".pytorch"): the trace's path without
 * .gz and .csv, plus suffix. */
static char *sidecar_path(const char *path, const char *suffix) {
    size_t n = strlen(path);
    char *p = malloc(n + strlen(suffix) + 1);
    if (!p) return NULL;
    memcpy(p, path, n + 1);
    if (n > 3 && strcmp(p + n - 3, ".gz") == 0) p[n -= 3] = '\0';
    if (n > 4 && strcmp(p + n - 4, ".csv") == 0) p[n -= 4] = '\0';
    strcpy(p + n, suffix);
    return p;
}

/* Opens the trace's sidecar with `suffix`: 0 with *f_out NULL when there is none, 0 with the file
 * open and *sp_out its path (the caller frees it and closes the file), -1 with err set when it
 * exists but cannot be read. */
static int sidecar_open(const char *path, const char *suffix, FILE **f_out, char **sp_out, char *err,
                        size_t err_size) {
    *f_out = NULL;
    *sp_out = sidecar_path(path, suffix);
    if (!*sp_out) return snprintf(err, err_size, "%s: out of memory", path), -1;
    *f_out = fopen(*sp_out, "r");
    if (*f_out) return 0;
    int missing = errno == ENOENT;
    if (!missing) snprintf(err, err_size, "%s: %s", *sp_out, strerror(errno));
    free(*sp_out);
    *sp_out = NULL;
    return missing ? 0 : -1;
}

/* The NAME.pytorch sidecar, if there is one (nofrag.record writes it): PyTorch's own allocator's
 * peaks while the trace was recorded, "KEY VALUE" lines, '#' comments; allocated_bytes_peak and
 * reserved_bytes_peak are read (both needed when the file exists), and the same two prefixed
 * expandable_ for a run with expandable segments (both or neither); other keys (allocator, torch)
 * are for people. */
static int load_pytorch_figures(const char *path, trace *t, char *err, size_t err_size) {
    FILE *f;
    char *sp;
    if (sidecar_open(path, ".pytorch", &f, &sp, err, err_size)) return -1;
    if (!f) return 0;
    char line[256];
    unsigned long long lineno = 0;
    int rc = 0;
    while (rc == 0 && fgets(line, sizeof line, f)) {
        lineno++;
        line[strcspn(line, "\r\n")] = '\0';
        if (line[0] == '#' || line[0] == '\0') continue;
        char *value = strchr(line, ' ');
        if (value) *value++ = '\0';
        uint64_t *field = strcmp(line, "allocated_bytes_peak") == 0            ? &t->pytorch_allocated_peak
                          : strcmp(line, "reserved_bytes_peak") == 0           ? &t->pytorch_reserved_peak
                          : strcmp(line, "expandable_allocated_bytes_peak") == 0 ? &t->expandable_allocated_peak
                          : strcmp(line, "expandable_reserved_bytes_peak") == 0  ? &t->expandable_reserved_peak
                                                                                 : NULL;
        if (!value) {
            snprintf(err, err_size, "%s:%llu: expected 'KEY VALUE', got '%s'", sp, lineno, line);
            rc = -1;
        } else if (field && (!parse_u64(value, 10, field) || *field == 0)) {
            snprintf(err, err_size, "%s:%llu: %s '%s' is not a positive number of bytes", sp, lineno, line, value);
            rc = -1;
        }
    }
    if (rc == 0 && (!t->pytorch_allocated_peak || !t->pytorch_reserved_peak)) {
        snprintf(err, err_size, "%s: needs both allocated_bytes_peak and reserved_bytes_peak", sp);
        rc = -1;
    }
    if (rc == 0 && !t->expandable_allocated_peak != !t->expandable_reserved_peak) {
        snprintf(err, err_size, "%s: expandable_allocated_bytes_peak and expandable_reserved_bytes_peak go together", sp);
        rc = -1;
    }
    fclose(f);
    free(sp);
    return rc;
}

/* Reads the sidecar's row indices (ascending). *rows_out NULL and 0 when there is no sidecar. */
static int load_steps(const char *path, uint64_t **rows_out, uint32_t *count_out, char *err,
                      size_t err_size) {
    *rows_out = NULL;
    *count_out = 0;
    FILE *f;
    char *sp;
    if (sidecar_open(path, ".steps", &f, &sp, err, err_size)) return -1;
    if (!f) return 0;
    char line[256];
    uint64_t *rows = NULL;
    uint32_t count = 0, cap = 0;
    unsigned long long lineno = 0;
    int rc = 0;
    while (fgets(line, sizeof line, f)) {
        lineno++;
        line[strcspn(line, "\r\n")] = '\0';
        if (line[0] == '#' || line[0] == '\0') continue;
        uint64_t v;
        if (!parse_u64(line, 10, &v) || (count && v <= rows[count - 1])) {
            snprintf(err, err_size,
                     "%s:%llu: expected a row index greater than the previous one, got '%s' "
                     "(steps sidecar of %s)", sp, lineno, line, path);
            rc = -1;
            break;
        }
        if (count == cap) {
            cap = cap ? cap * 2 : 64;
            uint64_t *grown = realloc(rows, cap * sizeof *rows);
            if (!grown) {
                snprintf(err, err_size, "%s: out of memory", sp);
                rc = -1;
                break;
            }
            rows = grown;
        }
        rows[count++] = v;
    }
    fclose(f);
    free(sp);
    if (rc) {
        free(rows);
        return rc;
    }
    *rows_out = rows;
    *count_out = count;
    return 0;
}

static int add_event(loader *ld, trace *t, uint64_t *cap, trace_event ev) {
    if (t->event_count == *cap) {
        *cap = *cap ? *cap * 2 : 65536;
        trace_event *grown = realloc(t->events, *cap * sizeof *grown);
        if (!grown) return fail(ld, "out of memory");
        t->events = grown;
    }
    t->events[t->event_count++] = ev;
    return 0;
}

static int stream_of(loader *ld, trace *t, uint64_t value, uint16_t *idx) {
    for (uint32_t i = 0; i < t->stream_count; i++)
        if (t->streams[i] == value) {
            *idx = (uint16_t)i;
            return 0;
        }
    if (t->stream_count == MAX_STREAMS) return fail(ld, "more than %d streams", MAX_STREAMS);
    uint64_t *grown = realloc(t->streams, (t->stream_count + 1) * sizeof *grown);
    if (!grown) return fail(ld, "out of memory");
    t->streams = grown;
    t->streams[t->stream_count] = value;
    *idx = (uint16_t)t->stream_count++;
    return 0;
}

static int parse_rows(loader *ld, gzFile gz, trace *t, const uint64_t *step_rows, uint32_t step_rows_count) {
    char line[MAX_LINE + 2];
    uint64_t cap = 0, live = 0, row = 0, prev_time = 0, day = 0;
    bool have_time = false;
    uint32_t next_step = 0;
    ld->line = 1;
    if (!gzgets(gz, line, sizeof line)) return fail(ld, "empty file: expected the header '%s'", HEADER);
    if ((unsigned char)line[0] == 0x1f && (unsigned char)line[1] == 0x8b)
        return fail(ld, "a gzip file, and this nofrag was built without zlib: gunzip it first");
    line[strcspn(line, "\r\n")] = '\0';
    if (strcmp(line, HEADER) != 0)
        return fail(ld, "expected the header '%s', found '%.80s'", HEADER, line);
    while (gzgets(gz, line, sizeof line)) {
        ld->line++;
        size_t len = strlen(line);
        if (len && line[len - 1] != '\n' && !gzeof(gz))
            return fail(ld, "line longer than %d characters", MAX_LINE);
        bool terminated = len && line[len - 1] == '\n';
        line[strcspn(line, "\r\n")] = '\0';
        if (line[0] == '\0') {
            if (terminated) continue;
            break;
        }
        char *fields[7];
        int nf = 0;
        char *p = line;
        for (; nf < 7; nf++) {
            fields[nf] = p;
            char *comma = strchr(p, ',');
            if (!comma) {
                nf++;
                break;
            }
            *comma = '\0';
            p = comma + 1;
        }
        if (nf != 6)
            return fail(ld, "expected 6 comma-separated fields (%s), found %d%s", HEADER, nf,
                        terminated ? "" : " (the file looks truncated)");
        uint64_t thread, time_us, ptr, size, stream;
        if (!parse_u64(fields[0], 10, &thread)) return fail(ld, "Thread '%s' is not a number", fields[0]);
        if (!parse_time(fields[1], &time_us)) return fail(ld, "Time '%s' is not HH:MM:SS.ffffff", fields[1]);
        /* Timestamps never go back, except across midnight. */
        /* Timestamps go back only across midnight, or by a moment where several threads log:
         * RMM's logger takes the time before it takes its lock, so rows of different threads may
         * be a little out of time order while their order in the file is the true one (the
         * order replayed). Such a row counts as logged at the previous row's time. A larger step
         * back means rows out of order (a file sorted or joined wrongly). */
        uint64_t now = day + time_us;
        if (have_time && time_us < prev_time) {
            if (prev_time > 23ull * 3600000000ull && time_us < 3600000000ull) {
                day += 24ull * 3600000000ull;
                now = day + time_us;
            } else if (prev_time - time_us > MAX_TIME_BACKSTEP_US) {
                return fail(ld, "out of order: Time %s is earlier than the previous row's", fields[1]);
            } else {
                now = t->last_time_us;
            }
        }
        prev_time = time_us;
        have_time = true;
        if (now > t->last_time_us) t->last_time_us = now;
        if (strncmp(fields[3], "0x", 2) != 0 || !parse_u64(fields[3] + 2, 16, &ptr))
            return fail(ld, "Pointer '%s' is not a hex address (0x...)", fields[3]);
        if (!parse_u64(fields[4], 10, &size)) return fail(ld, "Size '%s' is not a number", fields[4]);
        if (!parse_u64(fields[5], 16, &stream)) return fail(ld, "Stream '%s' is not a hex number", fields[5]);
        (void)thread;

        while (next_step < step_rows_count && step_rows[next_step] <= row) {
            if (step_rows[next_step] == row) {
                t->step_times_us[t->step_count] = t->last_time_us;
                t->step_starts[t->step_count++] = t->event_count;
            }
            next_step++;
        }
        row++;
        trace_event ev = {.size = size};
        if (stream_of(ld, t, stream, &ev.stream)) return -1;
        if (strcmp(fields[2], "allocate") == 0) {
            if (size == 0) return fail(ld, "allocate of size 0");
            if ((ld->map_count + 1) * 2 > ld->map_capacity && !map_grow(ld)) return fail(ld, "out of memory");
            if (map_find(ld, ptr)) return fail(ld, "allocate of 0x%llx, which is already live", (unsigned long long)ptr);
            uint32_t slot;
            if (ld->free_count) slot = ld->free_slots[--ld->free_count];
            else {
                slot = t->slot_count++;
                if (slot >= ld->sizes_capacity) {
                    ld->sizes_capacity = ld->sizes_capacity ? ld->sizes_capacity * 2 : 4096;
                    uint64_t *grown = realloc(ld->sizes, ld->sizes_capacity * sizeof *grown);
                    if (!grown) return fail(ld, "out of memory");
                    ld->sizes = grown;
                }
            }
            uint64_t key = ptr + 1, i = hash(key, ld->map_capacity);
            while (ld->keys[i]) i = (i + 1) & (ld->map_capacity - 1);
            ld->keys[i] = key;
            ld->slots[i] = slot;
            ld->map_count++;
            ld->sizes[slot] = size;
            live += size;
            if (live > t->peak_live) t->peak_live = live;
            ev.action = TRACE_ALLOC;
            ev.slot = slot;
        } else if (strcmp(fields[2], "free") == 0) {
            uint64_t *key_at = ld->map_capacity ? map_find(ld, ptr) : NULL;
            if (!key_at) return fail(ld, "free of 0x%llx, which is not live (out of order, or never allocated)",
                                     (unsigned long long)ptr);
            uint32_t slot = ld->slots[key_at - ld->keys];
            if (ld->sizes[slot] != size)
                return fail(ld, "free of 0x%llx with size %llu, allocated with size %llu", (unsigned long long)ptr,
                            (unsigned long long)size, (unsigned long long)ld->sizes[slot]);
            map_remove(ld, key_at);
            if (ld->free_count == ld->free_capacity) {
                ld->free_capacity = ld->free_capacity ? ld->free_capacity * 2 : 4096;
                uint32_t *grown = realloc(ld->free_slots, ld->free_capacity * sizeof *grown);
                if (!grown) return fail(ld, "out of memory");
                ld->free_slots = grown;
            }
            ld->free_slots[ld->free_count++] = slot;
            live -= size;
            ev.action = TRACE_FREE;
            ev.slot = slot;
        } else if (strcmp(fields[2], "allocate failure") == 0) {
            t->skipped_rows++;
            continue;
        } else {
            return fail(ld, "Action '%s' is neither allocate nor free", fields[2]);
        }
        if (add_event(ld, t, &cap, ev)) return -1;
        if (!terminated) break;
    }
    int zerr;
    const char *msg = gzerror(gz, &zerr);
    if (zerr != Z_OK && zerr != Z_STREAM_END) return fail(ld, "read error: %s (the file looks truncated or corrupt)", msg);
    if (next_step < step_rows_count && step_rows[next_step] >= row) {
        ld->line = 0;
        return fail(ld, "the .steps sidecar names row %llu, but the trace has %llu data rows",
                    (unsigned long long)step_rows[next_step], (unsigned long long)row);
    }
    return 0;
}

int trace_load(const char *path, trace *out, char *err, size_t err_size) {
    memset(out, 0, sizeof *out);
    loader ld = {.path = path, .err = err, .err_size = err_size};
    uint64_t *step_rows;
    uint32_t step_rows_count;
    if (load_steps(path, &step_rows, &step_rows_count, err, err_size)) return -1;
    gzFile gz = NULL;
    struct stat st;
    errno = 0;
    if (stat(path, &st) == 0 && S_ISDIR(st.st_mode))
        errno = EISDIR; /* gzopen would take it and read it as an empty file */
    else
        gz = gzopen(path, "rb");
    if (!gz) {
        snprintf(err, err_size, "%s: %s", path, errno ? strerror(errno) : "cannot open");
        free(step_rows);
        return -1;
    }
    gzbuffer(gz, 1 << 17);
    out->path = strdup(path);
    out->name = trace_name(path);
    out->step_starts = step_rows_count ? calloc(step_rows_count, sizeof *out->step_starts) : NULL;
    out->step_times_us = step_rows_count ? calloc(step_rows_count, sizeof *out->step_times_us) : NULL;
    int rc = (!out->path || !out->name || (step_rows_count && (!out->step_starts || !out->step_times_us)))
                 ? fail(&ld, "out of memory")
                 : parse_rows(&ld, gz, out, step_rows, step_rows_count);
    gzclose(gz);
    free(step_rows);
    free(ld.keys);
    free(ld.slots);
    free(ld.sizes);
    free(ld.free_slots);
    if (rc == 0 && out->event_count == 0) {
        snprintf(err, err_size, "%s: no allocation events", path);
        rc = -1;
    }
    if (rc == 0) rc = load_pytorch_figures(path, out, err, err_size);
    if (rc) trace_free(out);
    return rc;
}

void trace_free(trace *t) {
    free(t->path);
    free(t->name);
    free(t->events);
    free(t->step_starts);
    free(t->step_times_us);
    free(t->streams);
    memset(t, 0, sizeof *t);
}
