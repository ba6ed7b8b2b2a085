/* Trace reading: good files load with the right figures; malformed ones (truncated, garbage,
 * wrong columns, out of order) give an error naming the file and line, never a crash. */
#include <string.h>
#include <unistd.h>
#ifdef NOFRAG_HAVE_ZLIB
#include <zlib.h>
#endif

#include "check.h"
#include "replay.h"
#include "trace.h"

static char dir[] = "/tmp/nofrag-trace-XXXXXX";

static const char *write_file(const char *name, const char *text, bool gzip) {
    static char path[256];
    snprintf(path, sizeof path, "%s/%s", dir, name);
#ifndef NOFRAG_HAVE_ZLIB
    gzip = false;
#endif
    if (gzip) {
#ifdef NOFRAG_HAVE_ZLIB
        gzFile gz = gzopen(path, "wb");
        REQUIRE(gz != NULL);
        gzwrite(gz, text, (unsigned)strlen(text));
        gzclose(gz);
#endif
    } else {
        FILE *f = fopen(path, "wb");
        REQUIRE(f != NULL);
        fputs(text, f);
        fclose(f);
    }
    return path;
}

#define HDR "Thread,Time,Action,Pointer,Size,Stream\n"
static const char GOOD[] = HDR
    "1,10:00:00.000001,allocate,0x1000,4096,0\n"
    "1,10:00:00.000002,allocate,0x3000,8192,0\n"
    "1,10:00:00.000003,free,0x1000,4096,0\n"
    "1,10:00:00.000004,allocate,0x1000,1024,7f\n"
    "1,10:00:00.000005,free,0x3000,8192,0\n"
    "1,10:00:00.000006,free,0x1000,1024,7f\n";

/* Loading must fail, and the message must name the file and contain `line` and `what`. */
static void expect_error(const char *name, const char *text, bool gzip, const char *where, const char *what) {
    const char *path = write_file(name, text, gzip);
    trace t;
    char err[512] = "";
    int rc = trace_load(path, &t, err, sizeof err);
    CHECK(rc == -1);
    CHECK(strstr(err, name) != NULL);
    CHECK(strstr(err, where) != NULL);
    CHECK(strstr(err, what) != NULL);
    if (rc != -1 || !strstr(err, where) || !strstr(err, what)) fprintf(stderr, "  %s: got '%s'\n", name, err);
}

int main(void) {
    REQUIRE(mkdtemp(dir) != NULL);
    char err[512];
    trace t;

    /* A good file, plain and gzip, with a steps sidecar. */
    for (int gz = 0; gz < 2; gz++) {
        write_file("good.steps", "# comment\n0\n3\n", false);
        const char *path = write_file(gz ? "good.csv.gz" : "good.csv", GOOD, gz);
        REQUIRE(trace_load(path, &t, err, sizeof err) == 0);
        CHECK(t.event_count == 6);
        CHECK(t.peak_live == 4096 + 8192);
        CHECK(t.slot_count == 2);
        CHECK(t.stream_count == 2 && t.streams[1] == 0x7f);
        CHECK(t.step_count == 2 && t.step_starts[0] == 0 && t.step_starts[1] == 3);
        /* Each step's first row's time, and the last row's, in microseconds of the day. */
        const uint64_t ten = 10ull * 3600 * 1000000;
        CHECK(t.step_times_us[0] == ten + 1 && t.step_times_us[1] == ten + 4 && t.last_time_us == ten + 6);
        CHECK(strcmp(t.name, "good") == 0);
        replay_options o = {.cuda_device = -1};
        replay_result r;
        CHECK(replay_run(&t, &o, &r, err, sizeof err) == 0);
        CHECK(r.failed_allocs == 0 && r.events == 6);
        CHECK(r.stats.allocated_bytes.peak == 4096 + 8192);
        CHECK(r.stats.num_allocs == 3 && r.stats.num_frees == 3);
        /* A cap below the live peak fails allocations, counted, not fatal. */
        o.capacity = 8192;
        o.granularity = 4096;
        CHECK(replay_run(&t, &o, &r, err, sizeof err) == 0);
        CHECK(r.failed_allocs == 1);
        uint64_t min_cap = 0;
        CHECK(replay_min_capacity(&t, &o, &min_cap, err, sizeof err) == 0);
        CHECK(min_cap == 12288);
        trace_free(&t);
    }

    expect_error("empty.csv", "", false, ":1:", "header");
    expect_error("noheader.csv", "1,10:00:00.1,allocate,0x1000,4096,0\n", false, ":1:", "header");
    expect_error("columns.csv", HDR "1,10:00:00.000001,allocate,0x1000,4096\n", false, ":2:", "6 comma-separated");
    expect_error("extra.csv", HDR "1,10:00:00.000001,allocate,0x1000,4096,0,9\n", false, ":2:", "6 comma-separated");
    expect_error("garbage.csv", HDR "\x01\x02garbage!!\n", false, ":2:", "6 comma-separated");
    expect_error("action.csv", HDR "1,10:00:00.000001,alloc,0x1000,4096,0\n", false, ":2:", "Action");
    expect_error("pointer.csv", HDR "1,10:00:00.000001,allocate,1000,4096,0\n", false, ":2:", "Pointer");
    expect_error("size.csv", HDR "1,10:00:00.000001,allocate,0x1000,-5,0\n", false, ":2:", "Size");
    expect_error("stream.csv", HDR "1,10:00:00.000001,allocate,0x1000,4096,zz\n", false, ":2:", "Stream");
    expect_error("time.csv", HDR "1,25:00:00.000001,allocate,0x1000,4096,0\n", false, ":2:", "Time");
    expect_error("order.csv", HDR "1,10:00:05.000000,allocate,0x1000,4096,0\n1,10:00:01.000000,free,0x1000,4096,0\n",
                 false, ":3:", "out of order");
    /* Threads logging at once: a row a moment behind the previous one in time loads, counted at the
     * previous row's time, so step times never go back; across midnight the clock goes on. */
    write_file("threads.steps", "0\n1\n2\n3\n", false);
    REQUIRE(trace_load(write_file("threads.csv", HDR "1,23:59:59.900000,allocate,0x1000,4096,0\n"
                                                 "2,23:59:59.899000,allocate,0x3000,4096,0\n"
                                                 "1,00:00:00.100000,free,0x1000,4096,0\n"
                                                 "2,00:00:00.099990,free,0x3000,4096,0\n",
                                  false),
                       &t, err, sizeof err) == 0);
    const uint64_t day = 24ull * 3600 * 1000000;
    CHECK(t.step_count == 4 && t.step_times_us[0] == day - 100000 && t.step_times_us[1] == day - 100000);
    CHECK(t.step_times_us[2] == day + 100000 && t.step_times_us[3] == day + 100000 && t.last_time_us == day + 100000);
    trace_free(&t);
    expect_error("freefirst.csv", HDR "1,10:00:00.000001,free,0x1000,4096,0\n", false, ":2:", "not live");
    expect_error("twice.csv", HDR "1,10:00:00.000001,allocate,0x1000,4096,0\n1,10:00:00.000002,allocate,0x1000,512,0\n",
                 false, ":3:", "already live");
    expect_error("freesize.csv", HDR "1,10:00:00.000001,allocate,0x1000,4096,0\n1,10:00:00.000002,free,0x1000,512,0\n",
                 false, ":3:", "size");
    expect_error("truncline.csv", HDR "1,10:00:00.000001,allocate,0x1000,4096,0\n1,10:00:00.000002,allo", false,
                 ":3:", "truncated");
    expect_error("nodata.csv", HDR, false, "nodata.csv", "no allocation events");
    write_file("badsteps.steps", "5\n2\n", false);
    expect_error("badsteps.csv", GOOD, false, "badsteps.steps:2:", "row index");
    write_file("longsteps.steps", "0\n100\n", false);
    expect_error("longsteps.csv", GOOD, false, "longsteps.csv", "data rows");

#ifdef NOFRAG_HAVE_ZLIB
    /* A gzip file cut short: the first half of a compressed good trace. */
    {
        char big[65536];
        size_t n = strlen(HDR);
        memcpy(big, HDR, n);
        for (int i = 0; n < sizeof big - 100; i++)
            n += (size_t)snprintf(big + n, sizeof big - n, "1,10:00:00.%06d,%s,0x%x,512,0\n", i / 2,
                                  i % 2 ? "free" : "allocate", 0x1000 + (i / 2) * 512);
        const char *path = write_file("cut.csv.gz", big, true);
        FILE *f = fopen(path, "rb");
        REQUIRE(f != NULL);
        char gzbytes[65536];
        size_t got = fread(gzbytes, 1, sizeof gzbytes, f);
        fclose(f);
        f = fopen(path, "wb");
        fwrite(gzbytes, 1, got / 2, f);
        fclose(f);
        CHECK(trace_load(path, &t, err, sizeof err) == -1);
        CHECK(strstr(err, "cut.csv.gz:") != NULL);
        CHECK(strstr(err, "truncated") != NULL);
    }
#endif
    {
        char path[300];
        snprintf(path, sizeof path, "%s/does-not-exist.csv", dir);
        CHECK(trace_load(path, &t, err, sizeof err) == -1);
        CHECK(strstr(err, "does-not-exist.csv") != NULL);
    }
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    CHECK(system(cmd) == 0);
    return check_exit("test_trace");
}
