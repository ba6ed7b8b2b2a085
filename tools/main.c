/*
 * The nofrag command line: `nofrag replay TRACE...` runs allocation traces through a nofrag pool
 * on the host backend and reports memory held, driver calls and fragmentation.
 */
#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "nofrag.h"
#include "replay.h"
#include "trace.h"

static const char USAGE[] =
    "usage: nofrag replay [options] TRACE...\n"
    "       nofrag version\n"
    "\n"
    "Replays allocation traces (RMM CSV: Thread,Time,Action,Pointer,Size,Stream; gzip or plain,\n"
    "with an optional NAME.steps sidecar) through a nofrag pool on the host backend. NAME.steps\n"
    "lists the row index of each training step's first event, one a line; without it there are\n"
    "no per-step figures (JSON: null), only whole-trace totals.\n"
    "\n"
    "options:\n"
    "  --capacity BYTES        physical cap (suffixes K, M, G, T: powers of 1024), in whole pages\n"
    "                          rounded down: a budget never exceeded\n"
    "  --capacity-factor F     physical cap of F x the trace's peak live bytes (F >= 1), rounded\n"
    "                          up to whole pages\n"
    "  --min-capacity          also search the smallest cap under which the trace completes\n"
    "  --hold-near-live        under the cap, grow only to about 2% above the live peak so far\n"
    "                          (nf_config.hold_near_live: a cap that is a safety limit, like the\n"
    "                          PyTorch front end's default of the device's free memory)\n"
    "  --reuse-across-streams  memory freed on one stream serves the others at once, behind a\n"
    "                          device-side wait (nf_config.reuse_across_streams; the PyTorch\n"
    "                          front end's default where PyTorch has the record-stream callback)\n"
    "  --stream-lag N          each stream's work completes N trace events after it was queued,\n"
    "                          as on a GPU running behind the host (default 0: done at once), so\n"
    "                          other streams' frees are not known done at once\n"
    "  --json                  one JSON object per trace, one per line\n"
    "  --per-step              with --json: backend calls, remaps and estimated driver time of\n"
    "                          every step (step_calls, step_remaps, step_driver_us, and\n"
    "                          step_live_peak: the live peak so far at the step's end; index 0 is\n"
    "                          making the pool and what came before the first step)\n"
    "  --granularity BYTES     the host backend's page size (default 2M, CUDA's)\n"
    "  --page-size BYTES       the pool's physical page size: a power-of-two multiple of the\n"
    "                          granularity (default: the granularity); fewer, larger pages mean\n"
    "                          fewer driver calls and coarser memory\n"
    "  --pair-pages N          blocks of N pages or more back the aligned pairs of pages inside\n"
    "                          them with one physical allocation of two pages, mapped and moved\n"
    "                          whole (nf_config.pair_min_pages; default 0: off): about half the\n"
    "                          driver calls for large blocks, a little more memory held\n"
    "  --real-memory           back the pool with real host memory and check every block's\n"
    "                          bytes: a tag in each page it covers, written when it is placed and\n"
    "                          compared when it is freed (JSON: checked_words, corrupt_words); a\n"
    "                          changed tag is reported and the exit status is 1\n"
    "  --check N               check every invariant of the pool (nf_pool_check) after every N\n"
    "                          events and at the end; a broken one stops with an error\n"
    "  --log LEVEL             print the pool's messages at LEVEL or more severe to stderr\n"
    "                          (error, warn, info, debug): why an allocation failed under a cap\n"
    "                          (its size, the cap, live, held and idle bytes, the largest free\n"
    "                          range), driver failures (default: none)\n"
    "  --layout-log FILE       write every placement, free and step mark to FILE (one trace\n"
    "                          only; for layout studies, read by bench/physical_oracle.py)\n"
    "  --cuda DEVICE           replay on that GPU through the CUDA backend (real device memory)\n"
    "  --cuda-pool DEVICE      replay on that GPU through CUDA's own stream-ordered memory pool\n"
    "                          (cuMemAllocFromPoolAsync): the driver places blocks, so the held\n"
    "                          figures are CUDA's pool's, for comparison (no page moves)\n"
    "  -h, --help              this text\n";

/* A whole decimal number in [min, max] (no sign, nothing after it) into *out; 0 or -1. */
static int parse_count(const char *text, uint64_t min, uint64_t max, uint64_t *out) {
    char *end;
    errno = 0;
    unsigned long long v = strtoull(text, &end, 10);
    if (errno || *end || end == text || text[0] == '-' || v < min || v > max) return -1;
    *out = v;
    return 0;
}

static int usage_error(const char *fmt, const char *arg) {
    fprintf(stderr, "nofrag: ");
    fprintf(stderr, fmt, arg);
    fprintf(stderr, "\n\n%s", USAGE);
    return 2;
}

static int parse_bytes(const char *s, uint64_t *out) {
    errno = 0;
    char *end;
    /* Decimal digits only: strtod would also take "nan", "inf" and hexadecimal. */
    if (!isdigit((unsigned char)*s) && !(*s == '.' && isdigit((unsigned char)s[1]))) return -1;
    if (s[0] == '0' && (s[1] == 'x' || s[1] == 'X')) return -1;
    double v = strtod(s, &end);
    if (errno || end == s || !(v >= 0)) return -1;
    double mult = 1;
    switch (*end) {
    case 'K': case 'k': mult = 1024.0; end++; break;
    case 'M': case 'm': mult = 1048576.0; end++; break;
    case 'G': case 'g': mult = 1073741824.0; end++; break;
    case 'T': case 't': mult = 1099511627776.0; end++; break;
    default: break;
    }
    if (*end == 'i' || *end == 'I') end++;
    if (*end == 'B' || *end == 'b') end++;
    if (*end || v * mult >= 1.8e19) return -1;
    *out = (uint64_t)llround(v * mult);
    return 0;
}

typedef struct cli {
    uint64_t capacity;
    double capacity_factor;
    bool min_capacity;
    bool json;
    replay_options opts;
} cli;

static double gib(uint64_t bytes) { return (double)bytes / 1073741824.0; }

static void print_table_header(const cli *c) {
    printf("%-24s %9s %9s %9s %7s %9s %8s %9s %10s %8s %7s%s\n", "trace", "events", "peak live",
           "peak mapd", "ratio", "vspan", "calls/st", "remaps/st", "driver/st", "failed", "Mev/s",
           c->min_capacity ? "  min cap" : "");
    printf("%-24s %9s %9s %9s %7s %9s %8s %9s %10s %8s %7s%s\n", "", "", "GiB", "GiB", "", "GiB", "",
           "", "ms", "", "", c->min_capacity ? "  x live" : "");
}

/* Per-step figures need step marks (a NAME.steps sidecar): without them the replay has no steps
 * to divide by, and whole-trace totals printed under "per step" would read as one enormous step. */
static bool has_steps(const trace *t) { return t->step_count > 0; }

static void print_row(const cli *c, const trace *t, const replay_result *r, uint64_t min_cap) {
    const nf_stats *s = &r->stats;
    printf("%-24.24s %9llu %9.3f %9.3f %7.4f %9.3f", t->name, (unsigned long long)r->events, gib(t->peak_live),
           gib(s->reserved_bytes.peak), t->peak_live ? (double)s->reserved_bytes.peak / (double)t->peak_live : 0.0,
           gib(s->virtual_span_bytes.peak));
    if (has_steps(t))
        printf(" %8.1f %9.1f %10.2f", r->driver_calls_per_step, r->remaps_per_step, r->est_driver_us_per_step / 1000.0);
    else
        printf(" %8s %9s %10s", "-", "-", "-");
    printf(" %8llu %7.2f", (unsigned long long)r->failed_allocs,
           r->seconds > 0 ? (double)r->events / r->seconds / 1e6 : 0.0);
    if (c->min_capacity) printf(" %8.4f", (double)min_cap / (double)t->peak_live);
    printf("\n");
}

/* JSON output, one member at a time: json_open starts an object, each json_* call adds a member
 * (a comma before all but the first), json_close ends it. */
static const char *json_sep;
static void json_open(void) {
    putchar('{');
    json_sep = "";
}
static void json_key(const char *name) {
    printf("%s\"%s\":", json_sep, name);
    json_sep = ",";
}
static void json_close(void) {
    putchar('}');
    json_sep = ",";
}
static void json_u64(const char *name, uint64_t v) {
    json_key(name);
    printf("%llu", (unsigned long long)v);
}
static void json_num(const char *name, const char *fmt, double v) {
    json_key(name);
    printf(fmt, v);
}
/* A number, or null where it is not known (per-step figures of a trace without step marks). */
static void json_num_or_null(const char *name, const char *fmt, double v, bool known) {
    json_key(name);
    if (known) printf(fmt, v);
    else fputs("null", stdout);
}
static void json_bool(const char *name, bool v) {
    json_key(name);
    fputs(v ? "true" : "false", stdout);
}
/* A string member, escaped: a trace's name comes from a file name, which may hold any character. */
static void json_str(const char *name, const char *v) {
    json_key(name);
    putchar('"');
    for (const unsigned char *p = (const unsigned char *)v; *p; p++) {
        if (*p == '"' || *p == '\\') printf("\\%c", *p);
        else if (*p < 0x20) printf("\\u%04x", *p);
        else putchar(*p);
    }
    putchar('"');
}

/* The per-step figures (--per-step): one JSON array per figure, as the per-trace figures are. */
static double step_calls(const replay_step *s) { return (double)s->calls; }
static double step_remaps(const replay_step *s) { return (double)s->remaps; }
static double step_driver_us(const replay_step *s) { return s->driver_us; }
static double step_live_peak(const replay_step *s) { return (double)s->live_peak; }

static void json_step_array(const char *name, const replay_result *r, double (*figure)(const replay_step *),
                            const char *fmt) {
    json_key(name);
    for (uint32_t i = 0; i < r->step_slots; i++) {
        putchar(i ? ',' : '[');
        printf(fmt, figure(&r->steps[i]));
    }
    putchar(']');
}

static void print_json(const cli *c, const trace *t, const replay_result *r, uint64_t capacity,
                       uint64_t min_cap) {
    const nf_stats *s = &r->stats;
    json_open();
    json_str("trace", t->name);
    json_u64("events", r->events);
    json_u64("steps", t->step_count);
    json_u64("capacity_bytes", capacity);
    json_bool("hold_near_live", c->opts.hold_near_live);
    json_bool("reuse_across_streams", c->opts.reuse_across_streams);
    json_u64("stream_lag", c->opts.stream_lag);
    json_u64("page_bytes", s->granularity_bytes);
    json_u64("pair_min_pages", c->opts.pair_min_pages);
    json_u64("pairs_made", s->num_pairs_made);
    json_u64("peak_live_bytes", t->peak_live);
    json_u64("peak_mapped_bytes", s->reserved_bytes.peak);
    json_u64("peak_virtual_mapped_bytes", s->mapped_bytes.peak);
    json_num("overhead_ratio", "%.6f", t->peak_live ? (double)s->reserved_bytes.peak / (double)t->peak_live : 0.0);
    json_u64("virtual_span_bytes", s->virtual_span_bytes.peak);
    json_u64("failed_allocs", r->failed_allocs);
    if (c->opts.real_memory) {
        json_u64("checked_words", r->checked_words);
        json_u64("corrupt_words", r->corrupt_words);
        json_u64("skipped_checks", r->skipped_checks);
    }
    /* Without step marks the per-step members are null; the totals below still hold. */
    bool steps = has_steps(t);
    json_num_or_null("remaps_per_step", "%.3f", r->remaps_per_step, steps);
    json_num_or_null("driver_calls_per_step", "%.3f", r->driver_calls_per_step, steps);
    json_num_or_null("est_driver_us_per_step", "%.1f", r->est_driver_us_per_step, steps);
    /* How long the recorded job's steps took over the same window (the trace's Time column), and
     * the share of that the estimated driver time would take: whether the cost is one anybody
     * notices, on any trace with step marks. The timestamps are the recording run's host clock:
     * a rough figure (README, "What the misses cost"). */
    bool timed = r->recorded_step_us > 0;
    json_num_or_null("recorded_step_ms", "%.3f", r->recorded_step_us / 1000.0, timed);
    json_num_or_null("driver_share_of_step", "%.6f", timed ? r->est_driver_us_per_step / r->recorded_step_us : 0.0,
                     timed);
    json_num("est_driver_us_total", "%.1f", r->est_driver_us_total);
    /* Measured beside the estimate: the backend's own time (on CUDA the driver's, as a job pays
     * it; on the host backend only the simulation's bookkeeping). */
    json_num_or_null("backend_us_per_step", "%.1f", (double)r->window.backend_ns / 1e3 / r->window_steps, steps);
    json_num("backend_us_total", "%.1f", (double)s->backend_ns / 1e3);
    json_u64("backend_calls", s->backend_calls);
    json_u64("remaps", s->num_remaps);
    json_num("replay_seconds", "%.4f", r->seconds);
    json_num("events_per_second", "%.0f", r->seconds > 0 ? (double)r->events / r->seconds : 0.0);
    /* Each backend primitive per step over the same window, so a reader can see what the calls are. */
    json_key("calls_per_step");
    if (steps) {
        json_open();
#define NF_X_CALL_JSON(name, desc) \
    if (strncmp(#name, "calls_", 6) == 0) json_num(#name + 6, "%.3f", (double)r->window.name / r->window_steps);
        NF_STATS_COUNTERS(NF_X_CALL_JSON)
#undef NF_X_CALL_JSON
        json_close();
    } else {
        fputs("null", stdout);
    }
    if (r->step_slots) {
        json_step_array("step_calls", r, step_calls, "%.0f");
        json_step_array("step_remaps", r, step_remaps, "%.0f");
        json_step_array("step_driver_us", r, step_driver_us, "%.1f");
        json_step_array("step_live_peak", r, step_live_peak, "%.0f");
    }
    if (c->min_capacity) {
        json_u64("min_capacity_bytes", min_cap);
        json_num("min_capacity_ratio", "%.6f", (double)min_cap / (double)t->peak_live);
    }
    /* PyTorch's own allocator on the recorded job (NAME.pytorch), beside nofrag's figures. */
    bool pytorch = t->pytorch_reserved_peak > 0;
    json_key("pytorch_reserved_peak_bytes");
    if (pytorch) printf("%llu", (unsigned long long)t->pytorch_reserved_peak);
    else fputs("null", stdout);
    json_num_or_null("pytorch_held_over_live", "%.6f",
                     pytorch ? (double)t->pytorch_reserved_peak / (double)t->pytorch_allocated_peak : 0.0, pytorch);
    bool expandable = t->expandable_reserved_peak > 0;
    json_num_or_null("expandable_held_over_live", "%.6f",
                     expandable ? (double)t->expandable_reserved_peak / (double)t->expandable_allocated_peak : 0.0,
                     expandable);
    printf("}\n");
}

static int cmd_replay(int argc, char **argv) {
    cli c = {0};
    c.opts.cuda_device = -1;
    const char *layout_path = NULL;
    int first_trace = argc;
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "--capacity") == 0 || strcmp(a, "--granularity") == 0 || strcmp(a, "--page-size") == 0) {
            if (i + 1 >= argc) return usage_error("%s needs a value", a);
            uint64_t *dst = a[2] == 'c' ? &c.capacity : a[2] == 'g' ? &c.opts.granularity : &c.opts.page_bytes;
            if (parse_bytes(argv[++i], dst) || *dst == 0)
                return usage_error("'%s' is not a byte count (examples: 12G, 512MiB, 1048576)", argv[i]);
        } else if (strcmp(a, "--capacity-factor") == 0) {
            if (i + 1 >= argc) return usage_error("%s needs a value", a);
            char *end;
            errno = 0;
            c.capacity_factor = strtod(argv[++i], &end);
            if (errno || *end || !(c.capacity_factor >= 1.0) || c.capacity_factor > 1000)
                return usage_error("'%s' is not a factor between 1 and 1000", argv[i]);
        } else if (strcmp(a, "--min-capacity") == 0) {
            c.min_capacity = true;
        } else if (strcmp(a, "--json") == 0) {
            c.json = true;
        } else if (strcmp(a, "--per-step") == 0) {
            c.opts.per_step = true;
        } else if (strcmp(a, "--cuda") == 0 || strcmp(a, "--cuda-pool") == 0) {
            c.opts.cuda_pool = strcmp(a, "--cuda-pool") == 0;
            if (i + 1 >= argc) return usage_error("%s needs a device number", a);
            char *end;
            long d = strtol(argv[++i], &end, 10);
            if (*end || d < 0 || d > 1023) return usage_error("'%s' is not a device number", argv[i]);
            c.opts.cuda_device = (int)d;
        } else if (strcmp(a, "--layout-log") == 0) {
            if (i + 1 >= argc) return usage_error("%s needs a file name", a);
            layout_path = argv[++i];
        } else if (strcmp(a, "--pair-pages") == 0) {
            if (i + 1 >= argc) return usage_error("%s needs a number of pages", a);
            if (parse_count(argv[++i], 0, UINT32_MAX, &c.opts.pair_min_pages))
                return usage_error("'%s' is not a number of pages (0: no pairs)", argv[i]);
        } else if (strcmp(a, "--check") == 0) {
            if (i + 1 >= argc) return usage_error("%s needs a number of events", a);
            if (parse_count(argv[++i], 1, UINT64_MAX, &c.opts.check_every))
                return usage_error("'%s' is not a number of events (1 or more)", argv[i]);
        } else if (strcmp(a, "--log") == 0) {
            static const char *const levels[] = {"error", "warn", "info", "debug"};
            if (i + 1 >= argc) return usage_error("%s needs a level (error, warn, info, debug)", a);
            const char *v = argv[++i];
            int level = -1;
            for (int k = 0; k < 4; k++)
                if (strcmp(v, levels[k]) == 0) level = k;
            if (level < 0) return usage_error("'%s' is not a log level (error, warn, info, debug)", v);
            c.opts.log = true;
            c.opts.log_level = (nf_log_level)level;
        } else if (strcmp(a, "--real-memory") == 0) {
            c.opts.real_memory = true;
        } else if (strcmp(a, "--hold-near-live") == 0) {
            c.opts.hold_near_live = true;
        } else if (strcmp(a, "--reuse-across-streams") == 0) {
            c.opts.reuse_across_streams = true;
        } else if (strcmp(a, "--stream-lag") == 0) {
            if (i + 1 >= argc) return usage_error("%s needs a number of events", a);
            if (parse_count(argv[++i], 0, 100000000, &c.opts.stream_lag))
                return usage_error("'%s' is not a number of events (0 to 100000000)", argv[i]);
        } else if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
            fputs(USAGE, stdout);
            return 0;
        } else if (a[0] == '-' && a[1]) {
            return usage_error("unknown option '%s'", a);
        } else {
            first_trace = i;
            break;
        }
    }
    for (int i = first_trace; i < argc; i++)
        if (argv[i][0] == '-' && argv[i][1]) return usage_error("options go before the traces: '%s'", argv[i]);
    if (first_trace >= argc) return usage_error("%s", "no trace given");
    if (c.opts.per_step && !c.json) return usage_error("%s", "--per-step needs --json");
    if (c.capacity && c.capacity_factor) return usage_error("%s", "give --capacity or --capacity-factor, not both");
    if (c.opts.hold_near_live && !c.capacity && !c.capacity_factor)
        return usage_error("%s", "--hold-near-live needs --capacity or --capacity-factor (without a cap the pool holds near live anyway)");
    uint64_t gran = c.opts.granularity ? c.opts.granularity : 2ull << 20;
    if (gran < 4096 || (gran & (gran - 1))) return usage_error("%s", "--granularity must be a power of two >= 4K");
    if (c.opts.page_bytes && ((c.opts.page_bytes & (c.opts.page_bytes - 1)) || c.opts.page_bytes < gran))
        return usage_error("%s", "--page-size must be a power of two, at least the granularity");
    uint64_t pool_page = c.opts.page_bytes ? c.opts.page_bytes : gran;
    if (c.capacity && c.capacity < pool_page)
        return usage_error("%s", "--capacity must be at least one page (2M unless --granularity or "
                                 "--page-size say otherwise)");
    c.opts.progress = isatty(2);
    if (layout_path) {
        if (argc - first_trace != 1) return usage_error("%s", "--layout-log takes one trace");
        if (!(c.opts.layout_log = fopen(layout_path, "w"))) {
            fprintf(stderr, "nofrag: cannot write %s: %s\n", layout_path, strerror(errno));
            return 1;
        }
    }

    int status = 0;
    bool header_done = false;
    uint64_t checked_total = 0, corrupt_total = 0, skipped_total = 0, checked_traces = 0;
    for (int i = first_trace; i < argc; i++) {
        char err[1024];
        trace t;
        if (trace_load(argv[i], &t, err, sizeof err)) {
            fprintf(stderr, "nofrag: %s\n", err);
            status = 1;
            continue;
        }
        replay_options o = c.opts;
        o.capacity = c.capacity;
        /* F x peak live, rounded up to whole pool pages: at least F x the peak (an explicit
         * --capacity is a budget instead, which the pool rounds down). */
        if (c.capacity_factor)
            o.capacity = (uint64_t)ceil((double)t.peak_live * c.capacity_factor / (double)pool_page) * pool_page;
        replay_result r;
        uint64_t min_cap = 0;
        if (replay_run(&t, &o, &r, err, sizeof err) ||
            (c.min_capacity && replay_min_capacity(&t, &o, &min_cap, err, sizeof err))) {
            fprintf(stderr, "nofrag: %s\n", err);
            status = 1;
            trace_free(&t);
            continue;
        }
        checked_total += r.checked_words;
        corrupt_total += r.corrupt_words;
        skipped_total += r.skipped_checks;
        checked_traces++;
        if (r.corrupt_words) {
            fprintf(stderr, "nofrag: %s: %llu of %llu checked words changed while their blocks were live\n",
                    t.path, (unsigned long long)r.corrupt_words, (unsigned long long)r.checked_words);
            status = 1;
        }
        if (c.json) {
            print_json(&c, &t, &r, o.capacity, min_cap);
        } else {
            if (!header_done) {
                printf("cap: %s; reuse across streams: %s; stream lag: %llu events; per-step figures "
                       "average the steps after step %d; driver time is estimated from measured H200 "
                       "call costs\n",
                       c.capacity ? "fixed" : c.capacity_factor ? "factor x peak live" : "none",
                       c.opts.reuse_across_streams ? "on" : "off", (unsigned long long)c.opts.stream_lag,
                       REPLAY_WARMUP_STEPS);
                print_table_header(&c);
                header_done = true;
            }
            print_row(&c, &t, &r, min_cap);
            if (t.pytorch_reserved_peak) {
                printf("  (%s: PyTorch's own allocator held %.3f GiB for a live peak of %.3f GiB when it was "
                       "recorded, %.3fx", t.name, gib(t.pytorch_reserved_peak), gib(t.pytorch_allocated_peak),
                       (double)t.pytorch_reserved_peak / (double)t.pytorch_allocated_peak);
                if (t.expandable_reserved_peak)
                    printf(", with expandable segments %.3fx",
                           (double)t.expandable_reserved_peak / (double)t.expandable_allocated_peak);
                printf("; this replay held %.4fx)\n",
                       t.peak_live ? (double)r.stats.reserved_bytes.peak / (double)t.peak_live : 0.0);
            }
            if (!has_steps(&t))
                printf("  (%s has no step marks, so no per-step figures: put the row index of each step's first "
                       "event in %s.steps, one a line; over the whole trace: %llu backend calls, %llu remaps, "
                       "%.1f ms of estimated driver time)\n",
                       t.name, t.name, (unsigned long long)r.stats.backend_calls,
                       (unsigned long long)r.stats.num_remaps, r.est_driver_us_total / 1000.0);
        }
        fflush(stdout);
        replay_result_free(&r);
        trace_free(&t);
    }
    if (c.opts.real_memory && !c.json && checked_traces)
        printf("real memory: %llu tag words checked over %llu trace%s, %llu changed while their blocks were live%s\n",
               (unsigned long long)checked_total, (unsigned long long)checked_traces, checked_traces == 1 ? "" : "s",
               (unsigned long long)corrupt_total,
               skipped_total ? " (some blocks skipped: freed before their stream wrote them)" : "");
    if (c.opts.layout_log && fclose(c.opts.layout_log) != 0) {
        fprintf(stderr, "nofrag: cannot write %s: %s\n", layout_path, strerror(errno));
        status = 1;
    }
    return status;
}

int main(int argc, char **argv) {
    if (argc < 2) {
        fputs(USAGE, stderr);
        return 2;
    }
    if (strcmp(argv[1], "replay") == 0) return cmd_replay(argc - 2, argv + 2);
    if (strcmp(argv[1], "version") == 0 || strcmp(argv[1], "--version") == 0) {
        printf("nofrag %s\n", nf_version());
        return 0;
    }
    if (strcmp(argv[1], "-h") == 0 || strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "help") == 0) {
        fputs(USAGE, stdout);
        return 0;
    }
    return usage_error("unknown command '%s'", argv[1]);
}
