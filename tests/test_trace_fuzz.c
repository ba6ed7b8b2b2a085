/* Trace reading on damaged input: thousands of mutations of a valid trace and of its .steps
 * sidecar (bytes changed, lines cut, dropped, repeated or swapped, files truncated). Each load
 * must either succeed or fail with a message naming the file, and a trace that loads must replay
 * with every invariant of the pool holding, at a cap and without. Run under the sanitizers in CI,
 * this is where a parser's overrun or a replay's bad index would show. */
#include <string.h>
#include <unistd.h>

#include "check.h"
#include "replay.h"
#include "trace.h"

enum { ROUNDS = 2000, MAX_TEXT = 1 << 16 };

static char dir[] = "/tmp/nofrag-fuzz-XXXXXX";

static void write_text(const char *path, const char *text, size_t len) {
    FILE *f = fopen(path, "wb");
    REQUIRE(f != NULL);
    fwrite(text, 1, len, f);
    fclose(f);
}

/* A valid trace: blocks of a few sizes on two streams, allocated and freed in an interleaved
 * order over six steps, with its .steps sidecar. */
static size_t make_trace(uint64_t *rng, char *csv, char *steps) {
    size_t n = (size_t)sprintf(csv, "Thread,Time,Action,Pointer,Size,Stream\n");
    size_t sn = 0;
    uint64_t live_ptr[16] = {0}, live_size[16] = {0};
    int row = 0;
    for (int step = 0; step < 6; step++) {
        sn += (size_t)sprintf(steps + sn, "%d\n", row);
        for (int k = 0; k < 12; k++, row++) {
            int slot = (int)(rng_next(rng) % 16);
            unsigned us = (unsigned)row * 7;
            if (live_ptr[slot]) {
                n += (size_t)sprintf(csv + n, "1,10:00:%02u.%06u,free,0x%llx,%llu,%x\n", us / 1000000 % 60,
                                     us % 1000000, (unsigned long long)live_ptr[slot],
                                     (unsigned long long)live_size[slot], slot & 1);
                live_ptr[slot] = 0;
            } else {
                live_ptr[slot] = 0x7f0000000000ull + (uint64_t)slot * 0x40000000ull;
                live_size[slot] = (1 + rng_next(rng) % 4096) * 1024;
                n += (size_t)sprintf(csv + n, "1,10:00:%02u.%06u,allocate,0x%llx,%llu,%x\n", us / 1000000 % 60,
                                     us % 1000000, (unsigned long long)live_ptr[slot],
                                     (unsigned long long)live_size[slot], slot & 1);
            }
        }
    }
    steps[sn] = '\0';
    return n;
}

/* One random mutation of text[0..len), in place; returns the new length (< MAX_TEXT). */
static size_t mutate(uint64_t *rng, char *text, size_t len) {
    static const char alphabet[] = "0123456789abcdefx,.:\n -#\r\xff";
    if (len == 0) return 0;
    size_t at = rng_next(rng) % len;
    switch (rng_next(rng) % 6) {
    case 0: /* change a byte */
        text[at] = alphabet[rng_next(rng) % (sizeof alphabet - 1)];
        return len;
    case 1: /* truncate */
        return at;
    case 2: { /* drop a line */
        char *start = memchr(text + at, '\n', len - at);
        if (!start) return len;
        char *end = memchr(start + 1, '\n', len - (size_t)(start + 1 - text));
        if (!end) return (size_t)(start - text) + 1;
        memmove(start, end, len - (size_t)(end - text));
        return len - (size_t)(end - start);
    }
    case 3: { /* repeat a line */
        char *start = memchr(text + at, '\n', len - at);
        if (!start) return len;
        char *end = memchr(start + 1, '\n', len - (size_t)(start + 1 - text));
        if (!end) return len;
        size_t line = (size_t)(end - start);
        if (len + line >= MAX_TEXT) return len;
        memmove(end + line, end, len - (size_t)(end - text));
        memcpy(end, start, line);
        return len + line;
    }
    case 4: { /* swap two bytes */
        size_t other = rng_next(rng) % len;
        char c = text[at];
        text[at] = text[other];
        text[other] = c;
        return len;
    }
    default: { /* insert a digit: longer numbers, sizes and indices */
        if (len + 1 >= MAX_TEXT) return len;
        memmove(text + at + 1, text + at, len - at);
        text[at] = (char)('0' + rng_next(rng) % 10);
        return len + 1;
    }
    }
}

int main(void) {
    REQUIRE(mkdtemp(dir) != NULL);
    char csv_path[128], steps_path[128];
    snprintf(csv_path, sizeof csv_path, "%s/fuzz.csv", dir);
    snprintf(steps_path, sizeof steps_path, "%s/fuzz.steps", dir);
    static char csv[MAX_TEXT], steps[MAX_TEXT];
    uint64_t rng = 42;
    unsigned loaded = 0, refused = 0;
    for (int round = 0; round < ROUNDS; round++) {
        size_t len = make_trace(&rng, csv, steps), steps_len = strlen(steps);
        int mutations = 1 + (int)(rng_next(&rng) % 3);
        for (int m = 0; m < mutations; m++) {
            if (rng_next(&rng) % 4 == 0) steps_len = mutate(&rng, steps, steps_len);
            else len = mutate(&rng, csv, len);
        }
        write_text(csv_path, csv, len);
        write_text(steps_path, steps, steps_len);
        trace t;
        char err[512] = "";
        if (trace_load(csv_path, &t, err, sizeof err) != 0) {
            refused++;
            CHECK(strstr(err, "fuzz.") != NULL); /* names the file (or its sidecar) */
            if (!strstr(err, "fuzz.")) fprintf(stderr, "  round %d: message without the file: %s\n", round, err);
            continue;
        }
        loaded++;
        for (int capped = 0; capped < 2; capped++) {
            /* Every invariant after every event under the cap (a range of 4x the cap: cheap to
             * check); every 16 events without one (a terabyte of address space to walk). */
            replay_options o = {.cuda_device = -1, .check_every = capped ? 1 : 16};
            o.capacity = capped ? (t.peak_live + t.peak_live / 50 + (2u << 20)) / (2u << 20) * (2u << 20) : 0;
            replay_result r;
            int rc = replay_run(&t, &o, &r, err, sizeof err);
            CHECK(rc == 0 && r.status == NF_OK);
            if (rc != 0 || r.status != NF_OK) fprintf(stderr, "  round %d: replay: %s\n", round, err);
            replay_result_free(&r);
        }
        trace_free(&t);
    }
    printf("%u mutated traces loaded and replayed, %u refused with a message\n", loaded, refused);
    CHECK(loaded > ROUNDS / 20 && refused > ROUNDS / 20); /* both paths were exercised */
    unlink(csv_path);
    unlink(steps_path);
    rmdir(dir);
    return check_exit("test_trace_fuzz");
}
