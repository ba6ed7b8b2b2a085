/*
 * Pages: virtual pages of the pool's range, backed by physical pages that may be mapped at several
 * virtual places at once (aliases).
 *
 *   virtual pages   [ v0 ][ v1 ][ v2 ][ v3 ] ...... [ v90 ][ v91 ]
 *                      \     |            \            |
 *   physical pages     P0    P1            P2 ---------+     P2 is mapped at v3 and at v91
 *
 * A physical page is busy while a live block lies on one of its virtual pages, and it may be busy
 * through one virtual page only. An idle physical page can serve a new block through any of its
 * aliases at no cost, or be mapped at yet another place (a map and a set-access) while keeping its
 * old mappings. Keeping mappings is what makes a training step that repeats the shape of an earlier
 * one free of driver calls: each virtual range the job used keeps its pages, and physical memory
 * moves between ranges that are never live at the same time. A physical page keeps at most
 * MAX_ALIASES mappings; the oldest goes when another is needed.
 *
 * With nf_config.pair_min_pages a physical page may be a pair: one handle of two pages, mapped
 * only whole at a place of two virtual pages starting at an even one (its place is named by that
 * page). It is busy while a live block lies on either page of one place, and is claimed whole
 * even by a block that covers one of the two (the other is then held unused): pairs halve the
 * handles that large blocks move, for some memory (docs/placement.md, "Pairs of pages, built").
 *
 * Physical memory held is the number of pages of physical memory (a pair counts two); the cap
 * bounds that, never the virtual mappings.
 */
#include "pages.h"

#include <stdlib.h>
#include <string.h>

#include "backend_calls.h"

enum { MAX_ALIASES = 4 };

static uint64_t va_of(const nf_pool *pool, uint64_t v) { return pool->base + (v << pool->gran_log2); }

/* The place of virtual page v when it is mapped to a pair (in_pair): its even page; else v. The
 * hot loops pass in_pair with their constant `pairs` folded in (release_range, claim_range). */
static inline uint64_t place_at(uint64_t v, bool in_pair) { return in_pair ? v & ~(uint64_t)1 : v; }

/* The place through which mapped virtual page v is reached: v, or for a pair its even page. */
static inline uint64_t place_of(const nf_pool *pool, uint64_t v) {
    return place_at(v, pool->pairs && pool->phys[pool->pages[v].phys].span == 2);
}

/* Whether physical page p has a live block on a page of its place `place`. */
static inline bool place_live(const nf_pool *pool, const phys_page *pp, uint64_t place) {
    return pool->pages[place].live_blocks || (pool->pairs && pp->span == 2 && pool->pages[place + 1].live_blocks);
}

/* ---- idle lists of physical pages (singles, pairs): least recently idled first ------------ */

/* The idle list operations take the page's span from the caller: the hot loops of a pool without
 * pairs pass a constant 1 (release_range, claim_range), the rest pp->span (the wrappers below). */
static inline void idle_push_span(nf_pool *pool, int32_t p, uint8_t span) {
    phys_page *pp = &pool->phys[p];
    int k = span - 1;
    pp->idle_next = NF_NO_PAGE;
    pp->idle_prev = pool->idle_tail[k];
    if (pool->idle_tail[k] != NF_NO_PAGE) pool->phys[pool->idle_tail[k]].idle_next = p;
    else pool->idle_head[k] = p;
    pool->idle_tail[k] = p;
    pool->idle_count += span;
    gauge_add(&pool->stats.idle_bytes, span * pool->gran);
}

static inline void idle_push(nf_pool *pool, int32_t p) { idle_push_span(pool, p, pool->phys[p].span); }

/* Takes p off the list. p keeps its own links (a page off the list never has them read), so that
 * idle_relink can put it back where it was: pages removed one after another and relinked in the
 * reverse order restore the list exactly (pages_claim_in_place's undo). */
static inline void idle_remove_span(nf_pool *pool, int32_t p, uint8_t span) {
    phys_page *pp = &pool->phys[p];
    int k = span - 1;
    if (pp->idle_prev != NF_NO_PAGE) pool->phys[pp->idle_prev].idle_next = pp->idle_next;
    else pool->idle_head[k] = pp->idle_next;
    if (pp->idle_next != NF_NO_PAGE) pool->phys[pp->idle_next].idle_prev = pp->idle_prev;
    else pool->idle_tail[k] = pp->idle_prev;
    pool->idle_count -= span;
    gauge_sub(&pool->stats.idle_bytes, span * pool->gran);
}

static inline void idle_remove(nf_pool *pool, int32_t p) { idle_remove_span(pool, p, pool->phys[p].span); }

static inline void idle_relink(nf_pool *pool, int32_t p) {
    phys_page *pp = &pool->phys[p];
    int k = pp->span - 1;
    if (pp->idle_prev != NF_NO_PAGE) pool->phys[pp->idle_prev].idle_next = p;
    else pool->idle_head[k] = p;
    if (pp->idle_next != NF_NO_PAGE) pool->phys[pp->idle_next].idle_prev = p;
    else pool->idle_tail[k] = p;
    pool->idle_count += pp->span;
    pool->stats.idle_bytes.current += pp->span * pool->gran; /* back to what it was: not a new peak or total */
}

/* ---- fences: work that may still touch a physical page ------------------------------------ */

static inline void fence_add(nf_pool *pool, phys_page *pp, uint64_t mask, uint64_t seq) {
    /* The common case, one stream freeing again: nothing to merge. */
    if (pp->fence_mask != mask && pool_fence_known_done(pool, pp->fence_mask, pp->fence_seq, NO_STREAM))
        pp->fence_mask = 0;
    pp->fence_mask |= mask;
    pp->fence_seq = seq;
}

/* Whether no work queued on streams other than `idx` (NO_STREAM: on any stream) can still touch
 * the page, as far as is known without asking the backend. */
static inline bool fence_clear(const nf_pool *pool, const phys_page *pp, uint32_t idx) {
    return fence_only_own(pp->fence_mask, idx) || pool_fence_known_done(pool, pp->fence_mask, pp->fence_seq, idx);
}

/* Makes sure no work queued on streams other than `idx` (NO_STREAM: on any stream) can still
 * touch the page when idx's next work runs: a device-side wait on idx where the pool orders
 * streams on the device, else (and always for NO_STREAM, before the memory is released) the host
 * waits. Work on `idx` itself is ordered before whatever idx queues next. */
static nf_status fence_wait(nf_pool *pool, phys_page *pp, uint32_t idx) {
    if (fence_clear(pool, pp, idx)) return NF_OK;
    nf_status s = pool_order_after(pool, pp->fence_mask, pp->fence_seq, idx);
    if (s == NF_OK && idx == NO_STREAM) pp->fence_mask = 0;
    return s;
}

/* The page is now used through a different virtual place than before: the work queued through the
 * old place (its fence) must stay in front of every stream that reaches the page from now on. The
 * claiming stream itself is ordered after it already. */
static void alias_fence_take(nf_pool *pool, phys_page *pp) {
    if (pp->alias_fence_mask != pp->fence_mask &&
        pool_fence_known_done(pool, pp->alias_fence_mask, pp->alias_fence_seq, NO_STREAM))
        pp->alias_fence_mask = 0;
    pp->alias_fence_mask |= pp->fence_mask;
    if (pp->fence_seq > pp->alias_fence_seq) pp->alias_fence_seq = pp->fence_seq;
}

/* Orders idx after the work behind the page's alias fence on other streams (as fence_wait does).
 * The common case, nothing to wait for, is decided inline by alias_fence_wait. */
static nf_status alias_fence_wait_slow(nf_pool *pool, phys_page *pp, uint32_t idx) {
    if (pool_fence_known_done(pool, pp->alias_fence_mask, pp->alias_fence_seq, NO_STREAM)) {
        pp->alias_fence_mask = 0;
        return NF_OK;
    }
    if (pool_fence_known_done(pool, pp->alias_fence_mask, pp->alias_fence_seq, idx)) return NF_OK;
    return pool_order_after(pool, pp->alias_fence_mask, pp->alias_fence_seq, idx);
}

static inline nf_status alias_fence_wait(nf_pool *pool, phys_page *pp, uint32_t idx) {
    return fence_only_own(pp->alias_fence_mask, idx) ? NF_OK : alias_fence_wait_slow(pool, pp, idx);
}

/* ---- physical pages ---------------------------------------------------------------------- */

static uint64_t held(const nf_pool *pool) { return pool->phys_count; }

static uint64_t headroom(const nf_pool *pool) {
    if (!pool->cap_pages) return UINT64_MAX;
    uint64_t limit = pool->cap_pages + pool->cap_slack;
    return held(pool) >= limit ? 0 : limit - held(pool);
}

static nf_status phys_create(nf_pool *pool, uint8_t span, int32_t *p_out) {
    if (pool->phys_free_count == 0 && pool->phys_used == pool->phys_capacity) {
        uint64_t cap = pool->phys_capacity ? pool->phys_capacity * 2 : 64;
        phys_page *grown = realloc(pool->phys, cap * sizeof *grown);
        int32_t *grown_free = realloc(pool->phys_free, cap * sizeof *grown_free);
        if (grown) pool->phys = grown;
        if (grown_free) pool->phys_free = grown_free;
        if (!grown || !grown_free) return NF_ERR_NO_MEMORY_HOST;
        pool->phys_capacity = cap;
    }
    uint64_t handle;
    nf_status s = call_page_create(pool, span, &handle);
    if (s != NF_OK) return s;
    int32_t p = pool->phys_free_count ? pool->phys_free[--pool->phys_free_count] : (int32_t)pool->phys_used++;
    phys_page *pp = &pool->phys[p];
    memset(pp, 0, sizeof *pp);
    pp->handle = handle;
    pp->busy_va = pp->last_va = pp->first_alias = NF_NO_PAGE;
    pp->idle_prev = pp->idle_next = NF_NO_PAGE;
    pp->span = span;
    if (span == 2) pool->stats.num_pairs_made++;
    pool->phys_count += span;
    gauge_add(&pool->stats.reserved_bytes, span * pool->gran);
    *p_out = p;
    return NF_OK;
}

/* The mapping at place v is gone (the driver unmapped it): drops it from its physical page; the
 * place's pages (two for a pair) are unmapped. Returns the place's page count. */
static uint8_t alias_forget(nf_pool *pool, uint64_t v) {
    page *pg = &pool->pages[v];
    phys_page *pp = &pool->phys[pg->phys];
    int32_t *link = &pp->first_alias;
    while (*link != (int32_t)v) link = &pool->pages[*link].alias_next;
    *link = pg->alias_next;
    pg->alias_next = NF_NO_PAGE;
    for (uint64_t u = v; u < v + pp->span; u++) {
        page *half = &pool->pages[u];
        half->phys = NF_NO_PAGE;
        if (half->no_access) {
            half->no_access = 0;
            pool->pages_without_access--;
        }
    }
    pp->aliases--;
    gauge_sub(&pool->stats.mapped_bytes, pp->span * pool->gran);
    pool->stats.num_page_unmaps++;
    return pp->span;
}

/* Whether work queued through virtual page v, on any stream (a nonzero mask: all streams count),
 * may still be running as far as the pool knows: what unmapping v would wait for. */
static bool page_work_pending(const nf_pool *pool, uint64_t v) {
    uint64_t seq = pool->pages[v].last_free_seq;
    return seq && !pool_fence_known_done(pool, 1, seq, NO_STREAM);
}

/* Unmaps virtual pages [v, v + count) (each mapped, whole places only, no live block on them) in one driver call,
 * after the work queued through them is done: the work before each page's own last free
 * (last_free_seq), not the newer work its physical page may have gathered at another place, so
 * that the host rarely waits for a running step (on the accumulation recordings under a lagging
 * device, 0.74 -> 0.14 host waits a step with the step-mark events of nf_step_mark). The memory
 * itself stays mapped elsewhere; releasing it waits for all its work (phys_release). The driver
 * unmaps adjacent whole mappings together; that saves calls, not time: its work is per mapping
 * (docs/cost-model.md). */
static nf_status alias_unmap_run(nf_pool *pool, uint64_t v, uint64_t count) {
    nf_status s;
    for (uint64_t i = 0; i < count; i++)
        if (page_work_pending(pool, v + i) &&
            (s = pool_order_after(pool, 1, pool->pages[v + i].last_free_seq, NO_STREAM)) != NF_OK)
            return s;
    if ((s = call_unmap(pool, va_of(pool, v), count)) != NF_OK) return s;
    for (uint64_t i = 0; i < count;) i += alias_forget(pool, v + i);
    return NF_OK;
}

/* Unmaps the place v of a physical page (one or two pages). */
static nf_status alias_unmap(nf_pool *pool, int64_t v) {
    return alias_unmap_run(pool, (uint64_t)v, pool->phys[pool->pages[v].phys].span);
}

/* Releases idle physical page p: unmaps every alias, then gives the page back. */
static nf_status phys_release(nf_pool *pool, int32_t p) {
    phys_page *pp = &pool->phys[p];
    nf_status s;
    if ((s = fence_wait(pool, pp, NO_STREAM)) != NF_OK) return s; /* all work on the memory, at any place */
    while (pp->first_alias != NF_NO_PAGE)
        if ((s = alias_unmap(pool, pp->first_alias)) != NF_OK) return s;
    if ((s = call_page_release(pool, pp->handle)) != NF_OK) return s;
    idle_remove(pool, p);
    pp->handle = 0;
    pool->phys_free[pool->phys_free_count++] = p;
    pool->phys_count -= pp->span;
    gauge_sub(&pool->stats.reserved_bytes, pp->span * pool->gran);
    return NF_OK;
}

/* Maps physical page p (idle, with room for an alias) at place v (unmapped; for a pair, an even
 * page and the next, both unmapped). Access is granted by the caller (access_add), once for each
 * run of pages mapped together. */
static nf_status alias_map(nf_pool *pool, int32_t p, uint64_t v) {
    phys_page *pp = &pool->phys[p];
    uint64_t va = va_of(pool, v);
    nf_status s = call_map(pool, va, pp->span, pp->handle);
    if (s != NF_OK) return s;
    page *pg = &pool->pages[v];
    pg->phys = p;
    if (pp->span == 2) pool->pages[v + 1].phys = p;
    if (v + pp->span > pool->mapped_end_page) pool->mapped_end_page = v + pp->span;
    pg->alias_next = pp->first_alias;
    pp->first_alias = (int32_t)v;
    if (pp->ever_mapped) pool->stats.num_remaps++;
    pp->ever_mapped = 1;
    pp->aliases++;
    gauge_add(&pool->stats.mapped_bytes, pp->span * pool->gran);
    pool->stats.num_page_maps++;
    return NF_OK;
}

/* Pages mapped but without access: [start, start + length) of virtual pages. One set-access
 * call covers the whole run, cheaper than one a page (docs/cost-model.md). If the call fails, the
 * run's pages are marked no_access and get access when a block next claims them: no block ever
 * uses a page without. */
typedef struct access_run {
    uint64_t start, length;
} access_run;

static nf_status access_flush(nf_pool *pool, access_run *run) {
    if (!run->length) return NF_OK;
    nf_status s = call_set_access(pool, va_of(pool, run->start), run->length);
    if (s != NF_OK || pool->pages_without_access) {
        for (uint64_t v = run->start; v < run->start + run->length; v++) {
            page *pg = &pool->pages[v];
            bool lacking = s != NF_OK;
            if (pg->no_access != lacking) {
                pg->no_access = lacking;
                if (lacking) pool->pages_without_access++;
                else pool->pages_without_access--;
            }
        }
    }
    run->length = 0;
    return s;
}

/* Virtual page v (mapped, without access) is to be used: extends the run, or grants the run
 * access and starts another. */
static nf_status access_add(nf_pool *pool, access_run *run, uint64_t v) {
    if (run->length && run->start + run->length == v) {
        run->length++;
        return NF_OK;
    }
    nf_status s = access_flush(pool, run);
    run->start = v;
    run->length = 1;
    return s;
}

/* The `span` pages of place v are to be used: all of them join the run, even when flushing the
 * run before them fails (access_add adds its page either way), so that a pair's two pages are
 * granted access, or marked without it, together (I7). Returns the first failure. */
static nf_status access_add_place(nf_pool *pool, access_run *run, uint64_t v, uint8_t span) {
    nf_status first_failure = NF_OK;
    for (uint64_t u = v; u < v + span; u++) {
        nf_status s = access_add(pool, run, u);
        if (first_failure == NF_OK) first_failure = s;
    }
    return first_failure;
}

nf_status pages_grant_access_again(nf_pool *pool) {
    nf_status first_failure = NF_OK;
    uint64_t v = 0;
    while (v < pool->mapped_end_page) {
        if (!pages_mapped(pool, v) || pool->pages[v].no_access) { /* the latter get access when claimed */
            v++;
            continue;
        }
        uint64_t start = v;
        while (v < pool->mapped_end_page && pages_mapped(pool, v) && !pool->pages[v].no_access) v++;
        nf_status s = call_set_access(pool, va_of(pool, start), v - start);
        if (s == NF_OK) continue;
        if (first_failure == NF_OK) first_failure = s;
        /* The run keeps the access it had; its idle pages are granted again when claimed (I7 keeps
         * live pages off that path: they still have their own device's access). */
        for (uint64_t u = start; u < v; u++)
            if (!place_live(pool, &pool->phys[pool->pages[u].phys], place_of(pool, u))) { /* a pair's pages together */
                pool->pages[u].no_access = 1;
                pool->pages_without_access++;
            }
    }
    return first_failure;
}

/* Makes physical page p (of `span` pages) busy through its place v. */
static inline void phys_claim_span(nf_pool *pool, int32_t p, uint64_t v, uint8_t span) {
    phys_page *pp = &pool->phys[p];
    idle_remove_span(pool, p, span);
    pp->busy_va = (int32_t)v;
}

static inline void phys_claim(nf_pool *pool, int32_t p, uint64_t v) { phys_claim_span(pool, p, v, pool->phys[p].span); }

/* How many more physical pages to create before reusing idle ones. Under a cap, up to the cap:
 * more pages mean fewer aliases each and fewer conflicts later; but no more than
 * BUDGET_GROWTH_PERMILLE above the live peak so far, so that a cap far above the job's needs is not
 * turned into idle memory (FSDP on two GPUs under a 120 GiB cap held 6.1x its live peak without
 * this bound; at a cap of 1.02x the figures of every trace are the same with or without it).
 * Without a cap (or with config.hold_near_live, then also within the cap), up to GROWTH_PERMILLE
 * above the live peak so far, so held memory follows the live peak. */
enum { GROWTH_PERMILLE = 20, BUDGET_GROWTH_PERMILLE = 200, IDLE_CHOICES = 64 };
static uint64_t growth_room(const nf_pool *pool) {
    if (pool->device_full) return 0;
    uint64_t room = headroom(pool);
    bool budget = room != UINT64_MAX && !pool->config.hold_near_live;
    uint64_t peak = pool->live_high_water;
    uint64_t target = (peak + peak / 1000 * (budget ? BUDGET_GROWTH_PERMILLE : GROWTH_PERMILLE)) / pool->gran;
    uint64_t grow = target > held(pool) ? target - held(pool) : 0;
    return grow < room ? grow : room;
}

/* The virtual page where physical page p was mapped longest ago: the last of its list, since
 * alias_map puts each new mapping first. It is the one that gives way when p, with every alias
 * slot taken, must be mapped at yet another place: the places mapped most recently are the ones
 * the job's current steps use. (Until this was written, the newest mapping gave way, contrary to
 * this file's header; evicting the oldest cut calls a step without a cap on two of 30 traces,
 * gpt2_small_accum_ckpt 23.2 -> 22.6 and gpt2_accum_ckpt_seed1 60.8 -> 60.6, and changed nothing
 * else, the held-out recordings included: the limit is rarely reached.) */
static int64_t oldest_alias(const nf_pool *pool, int32_t p) {
    int32_t v = pool->phys[p].first_alias;
    while (pool->pages[v].alias_next != NF_NO_PAGE) v = pool->pages[v].alias_next;
    return v;
}

/* Whether taking idle page p for stream idx would have to wait (fence_wait in phys_for) for
 * other streams' work on it (on the host, or on the device with reuse_across_streams, which then
 * holds idx back), or, when its oldest mapping must go to make room (all MAX_ALIASES slots taken),
 * make the host wait for the work queued through that mapping (alias_unmap_run). */
static bool idle_page_waits(const nf_pool *pool, int32_t p, uint32_t idx) {
    const phys_page *pp = &pool->phys[p];
    if (!fence_clear(pool, pp, idx)) return true;
    return pp->aliases >= MAX_ALIASES && page_work_pending(pool, (uint64_t)oldest_alias(pool, p));
}

/* The idle physical page to serve virtual page v for stream idx: among the IDLE_CHOICES least
 * recently idled, one that no other stream's queued work may still touch (as far as is known
 * without asking the backend), else any; then the one already mapped nearest to v, then the one
 * mapped at the fewest places. Taking a page with pending work elsewhere makes the host wait for
 * that work (bench_stream_waits, a host model of FSDP's two streams: 34% fewer waits). A page
 * that served the same neighbourhood served the same kind of block: it tends to be free when v's
 * block is live, while a page serving far-away blocks is more often wanted by both at once
 * (measured in docs/placement.md: remaps per step at a 1.02x cap fell on five of seven traces). */
static int32_t idle_choice(const nf_pool *pool, uint64_t v, uint32_t idx, uint8_t span) {
    enum { WAITS = 62 }; /* the key's bit for a page that would make the host wait: ranks it last */
    int32_t best = pool->idle_head[span - 1];
    uint64_t best_key = UINT64_MAX;
    int n = 0;
    for (int32_t p = best; p != NF_NO_PAGE && n < IDLE_CHOICES; p = pool->phys[p].idle_next, n++) {
        const phys_page *pp = &pool->phys[p];
        uint64_t distance = UINT32_MAX;
        for (int32_t a = pp->first_alias; a != NF_NO_PAGE; a = pool->pages[a].alias_next) {
            uint64_t d = (uint64_t)a > v ? (uint64_t)a - v : v - (uint64_t)a;
            if (d < distance) distance = d;
        }
        uint64_t key = (distance << 8) + pp->aliases;
        if (key >= best_key) continue; /* cannot win even if it makes no one wait */
        if (idle_page_waits(pool, p, idx)) key |= 1ull << WAITS;
        if (key < best_key) {
            best_key = key;
            best = p;
        }
    }
    return best;
}

/* A physical page of `span` pages for place v (unmapped: v, or for a pair the even page v and
 * v + 1), mapped there and busy through it: a new one while growth_room allows (always with
 * pin_pages: an idle page stays where it is), else an idle one (idle_choice), its oldest mapping
 * giving way if it has no alias slot free. When the backend has no memory for a new page
 * (device_full), an idle one too, if there is one. A single page that finds no idle single and no
 * room to grow takes the memory of the least recently idled idle pair (released, so that the
 * single can be made). A pair that can be neither made nor found idle is NF_ERR_OUT_OF_MEMORY
 * with nothing changed: the caller backs the two pages as singles. */
static nf_status phys_for(nf_pool *pool, uint64_t v, uint8_t span, uint32_t idx, bool *reused, access_run *run) {
    int32_t p = NF_NO_PAGE;
    nf_status s;
    if (span == 2) {
        /* Made only within growth_room: beyond it, idle singles are what to use, if any. */
        if (growth_room(pool) >= 2) {
            s = phys_create(pool, 2, &p);
            if (s == NF_OK) idle_push(pool, p);
            else if (s != NF_ERR_OUT_OF_MEMORY) return s;
        }
        if (p == NF_NO_PAGE && pool->idle_head[1] == NF_NO_PAGE) return NF_ERR_OUT_OF_MEMORY;
    } else {
        /* (Never with pin_pages: a pinned pool makes no pairs.) */
        if (pool->idle_head[0] == NF_NO_PAGE && pool->idle_head[1] != NF_NO_PAGE &&
            (headroom(pool) == 0 || growth_room(pool) == 0)) {
            if ((s = phys_release(pool, pool->idle_head[1])) != NF_OK) return s;
            *reused = true;
        }
        if (pool->config.pin_pages || growth_room(pool) > 0 || pool->idle_head[0] == NF_NO_PAGE) {
            if (headroom(pool) == 0) return NF_ERR_OUT_OF_MEMORY;
            s = phys_create(pool, 1, &p);
            if (s == NF_ERR_OUT_OF_MEMORY && !pool->device_full)
                pool_log(pool, NF_LOG_WARN, "the device has no memory for another page with %llu bytes held, under a cap of "
                         "%llu: memory outside this pool took it; serving requests from idle pages from now on",
                         (unsigned long long)(held(pool) * pool->gran), (unsigned long long)(pool->cap_pages * pool->gran));
            if (s == NF_ERR_OUT_OF_MEMORY) pool->device_full = true;
            if (s == NF_OK) {
                pool->device_full = false;
                idle_push(pool, p);
            } else if (s != NF_ERR_OUT_OF_MEMORY || pool->config.pin_pages || pool->idle_head[0] == NF_NO_PAGE) {
                return s;
            }
        }
    }
    if (p == NF_NO_PAGE) {
        p = idle_choice(pool, v, idx, span);
        *reused = true;
        if (pool->phys[p].aliases >= MAX_ALIASES && (s = alias_unmap(pool, oldest_alias(pool, p))) != NF_OK)
            return s;
    }
    /* The page may have served another place: work queued there on other streams must be done,
     * and the claiming stream's own work there stays in front of other streams using it here. */
    if ((s = fence_wait(pool, &pool->phys[p], idx)) != NF_OK) return s;
    alias_fence_take(pool, &pool->phys[p]);
    if ((s = alias_map(pool, p, v)) != NF_OK) return s;
    phys_claim(pool, p, v);
    return access_add_place(pool, run, v, span);
}

/* ---- what the block layer asks -------------------------------------------------------------- */

/* Walks the virtual pages of [addr, addr + size) as acquiring them would, without changing
 * anything: *need_out = pages that need a physical page mapped, *claimed_out = idle physical pages
 * the range would make busy through their existing mapping. */
static void range_cost(nf_pool *pool, uint64_t addr, uint64_t size, uint64_t *need_out, uint64_t *claimed_out) {
    uint64_t need = 0, claimed = 0, claimed_pair = UINT64_MAX;
    uint32_t stamp = ++pool->stamp;
    const bool pairs = pool->pairs;
    for (uint64_t v = page_of(pool, addr), last = page_last(pool, addr, size); v <= last; v++) {
        const page *pg = &pool->pages[v];
        if (pg->live_blocks) continue;
        if (pg->phys != NF_NO_PAGE) {
            phys_page *pp = &pool->phys[pg->phys];
            if (pairs && pp->span == 2) {
                uint64_t place = place_at(v, true);
                /* Busy through this place (a block on its other page), or claimed already through
                 * its first page in the range: backed. Else claimed whole (both pages held). */
                if (pp->busy_va == (int32_t)place || place == claimed_pair) continue;
                if (pp->busy_va == NF_NO_PAGE && pp->stamp != stamp) {
                    pp->stamp = stamp;
                    claimed += 2;
                    claimed_pair = place;
                    continue;
                }
            } else if (pp->busy_va == NF_NO_PAGE && (pp->aliases == 1 || pp->stamp != stamp)) {
                /* A page mapped at one place cannot appear twice in the range: no mark needed. */
                if (pp->aliases > 1) pp->stamp = stamp;
                claimed++;
                continue;
            }
        }
        need++;
    }
    *need_out = need;
    *claimed_out = claimed;
}

uint64_t pages_cost(nf_pool *pool, uint64_t addr, uint64_t size) {
    uint64_t need, claimed;
    range_cost(pool, addr, size, &need, &claimed);
    return need;
}

uint64_t pages_newly_busy(nf_pool *pool, uint64_t addr, uint64_t size, uint64_t *cost_out) {
    uint64_t need, claimed;
    range_cost(pool, addr, size, &need, &claimed);
    *cost_out = need;
    return need + claimed;
}

uint64_t pages_spare(const nf_pool *pool) {
    uint64_t room = pool->device_full ? 0 : headroom(pool);
    return room == UINT64_MAX ? UINT64_MAX : room + pool->idle_count;
}

bool pages_available(nf_pool *pool, uint64_t addr, uint64_t size, uint64_t *cost_out) {
    uint64_t need, busy = pages_newly_busy(pool, addr, size, &need);
    if (cost_out) *cost_out = need;
    return need == 0 || busy <= pages_spare(pool);
}

/* Undoes pages_claim_in_place on pages [first, stop), last page first, so that physical pages go
 * back onto the idle lists in the reverse of the order they left. */
static inline void claim_undo_range(nf_pool *pool, uint64_t first, uint64_t stop, const bool pairs) {
    for (uint64_t v = stop; v-- > first;) {
        page *pg = &pool->pages[v];
        if (--pg->live_blocks) continue;
        phys_page *pp = &pool->phys[pg->phys];
        if (pairs && place_live(pool, pp, place_of(pool, v))) continue; /* a pair still used through its other page */
        pp->busy_va = NF_NO_PAGE;
        idle_relink(pool, pg->phys);
    }
}

static void claim_undo(nf_pool *pool, uint64_t first, uint64_t stop) {
    if (pool->pairs) claim_undo_range(pool, first, stop, true);
    else claim_undo_range(pool, first, stop, false);
}

/* pages_claim_in_place on [first, last], `pairs` constant as in release_range. */
static inline bool claim_range(nf_pool *pool, uint64_t first, uint64_t last, uint32_t idx, const bool pairs) {
    for (uint64_t v = first; v <= last; v++) {
        page *pg = &pool->pages[v];
        if (pg->phys == NF_NO_PAGE) {
            claim_undo(pool, first, v);
            return false;
        }
        phys_page *pp = &pool->phys[pg->phys];
        int32_t place = (int32_t)place_at(v, pairs && pp->span == 2);
        /* Busy through v's place already, or idle and last used there: only work from the page's
         * other places could be in the way, and only the own stream's is known not to be. */
        bool ok = fence_only_own(pp->alias_fence_mask, idx) &&
                  ((pairs ? pp->busy_va == place : pg->live_blocks != 0) ||
                   (pp->busy_va == NF_NO_PAGE && pp->last_va == place));
        if (!ok) {
            claim_undo(pool, first, v);
            return false;
        }
        if (pg->live_blocks++ || (pairs && pp->busy_va == place)) continue;
        phys_claim_span(pool, pg->phys, (uint64_t)place, pairs ? pp->span : 1);
    }
    return true;
}

bool pages_claim_in_place(nf_pool *pool, uint64_t addr, uint64_t size, uint32_t idx) {
    if (pool->pages_without_access) return false;
    uint64_t first = page_of(pool, addr), last = page_last(pool, addr, size);
    return pool->pairs ? claim_range(pool, first, last, idx, true) : claim_range(pool, first, last, idx, false);
}

void pages_claim_undo(nf_pool *pool, uint64_t addr, uint64_t size) {
    claim_undo(pool, page_of(pool, addr), page_last(pool, addr, size) + 1);
}

/* pages_acquire failed before reaching pages [from, last]: counts them anyway, so that the
 * caller's pages_release, which drops every page of the range, leaves each count as it was. */
static nf_status count_rest(nf_pool *pool, uint64_t from, uint64_t last, nf_status failure) {
    for (uint64_t v = from; v <= last; v++) pool->pages[v].live_blocks++;
    return failure;
}

/* Whether the block on [addr, addr + size) backs the aligned pairs of pages wholly inside it with
 * pairs (nf_config.pair_min_pages). */
static bool block_takes_pairs(const nf_pool *pool, uint64_t first, uint64_t last) {
    return pool->pairs && last - first + 1 >= pool->config.pair_min_pages;
}

nf_status pages_acquire(nf_pool *pool, uint64_t addr, uint64_t size, uint32_t idx, bool *reused) {
    uint64_t first = page_of(pool, addr), last = page_last(pool, addr, size);
    nf_status s = NF_OK;
    bool missing = false;
    uint64_t conflict_start = 0, conflicts = 0;
    const bool pairs = pool->pairs;
    /* First every page that can be had in place, so no page of this range is taken away from it
     * to serve another page of the same range. */
    for (uint64_t v = first; v <= last; v++) {
        page *pg = &pool->pages[v];
        phys_page *pp = pg->phys != NF_NO_PAGE ? &pool->phys[pg->phys] : NULL;
        uint64_t place = place_at(v, pairs && pp && pp->span == 2);
        if (pg->live_blocks++ || (pairs && pp && pp->busy_va == (int32_t)place)) {
            /* Busy through v's place already: only work from the page's other places can be in
             * the way. */
            if ((s = alias_fence_wait(pool, pp, idx)) != NF_OK) return count_rest(pool, v + 1, last, s);
            continue;
        }
        if (!pp) {
            missing = true;
            continue;
        }
        if (pp->busy_va != NF_NO_PAGE) {
            /* Its physical page is busy elsewhere: the mapping goes (the whole place: a pair's
             * other page too, inside the range or not), one unmap call for each run of adjacent
             * such places (two locals rather than a run struct like access_run: this loop is the
             * allocator's hot path, and the struct cost 0.4% of replay instructions). */
            missing = true;
            if (pairs && conflicts && conflict_start + conflicts > v) continue; /* a pair's page, in the run */
            if (conflicts && conflict_start + conflicts == place) {
                conflicts += pp->span;
                continue;
            }
            if (conflicts && (s = alias_unmap_run(pool, conflict_start, conflicts)) != NF_OK)
                return count_rest(pool, v + 1, last, s);
            conflict_start = place;
            conflicts = pp->span;
            continue;
        }
        if (pp->last_va != (int32_t)place) {
            if ((s = fence_wait(pool, pp, idx)) != NF_OK) return count_rest(pool, v + 1, last, s);
            alias_fence_take(pool, pp);
        }
        if ((s = alias_fence_wait(pool, pp, idx)) != NF_OK) return count_rest(pool, v + 1, last, s);
        phys_claim(pool, pg->phys, place);
    }
    /* Only after a failed set-access: pages claimed in place may still need access granted. */
    if (pool->pages_without_access)
        for (uint64_t v = first; !missing && v <= last; v++) missing = pool->pages[v].no_access;
    if (!missing) return NF_OK;
    if (conflicts && (s = alias_unmap_run(pool, conflict_start, conflicts)) != NF_OK) return s;
    access_run run = {0, 0};
    bool take_pairs = block_takes_pairs(pool, first, last);
    /* The pages wholly inside the block: [inner_first, inner_end). */
    uint64_t inner_first = page_of(pool, addr + pool->gran - 1), inner_end = page_of(pool, addr + size);
    for (uint64_t v = first; v <= last && s == NF_OK; v++) {
        page *pg = &pool->pages[v];
        if (pg->phys != NF_NO_PAGE) {
            if (!pg->no_access) continue;
            /* Access is granted to whole places: a pair's both pages (they lack it together). */
            uint64_t place = place_of(pool, v);
            uint8_t span = pool->phys[pg->phys].span;
            s = access_add_place(pool, &run, place, span);
            v = place + span - 1;
            continue;
        }
        if (take_pairs && !(v & 1) && v >= inner_first && v + 2 <= inner_end && pool->pages[v + 1].phys == NF_NO_PAGE) {
            s = phys_for(pool, v, 2, idx, reused, &run);
            if (s == NF_OK) {
                v++;
                continue;
            }
            if (s != NF_ERR_OUT_OF_MEMORY) break;
            s = NF_OK; /* no pair to be had: two singles */
        }
        s = phys_for(pool, v, 1, idx, reused, &run);
    }
    /* Even after a failure: the pages mapped so far get access (if that fails too they keep
     * no_access, and the caller releases them). */
    nf_status flushed = access_flush(pool, &run);
    return s != NF_OK ? s : flushed;
}

/* pages_release on [first, last]; `pairs` is pool->pairs, a constant in each of the two calls
 * below, so that the loop of a pool without pairs (every place one page) has no pair case in it:
 * this loop is a fifth of the replay's instructions. */
static inline void release_range(nf_pool *pool, uint64_t first, uint64_t last, uint64_t mask, uint64_t seq,
                                 const bool pairs) {
    for (uint64_t v = first; v <= last; v++) {
        page *pg = &pool->pages[v];
        pg->live_blocks--;
        if (mask && seq > pg->last_free_seq) pg->last_free_seq = seq;
        if (pg->phys == NF_NO_PAGE) continue;
        phys_page *pp = &pool->phys[pg->phys];
        uint64_t place = place_at(v, pairs && pp->span == 2);
        if (pp->busy_va != (int32_t)place) continue;
        fence_add(pool, pp, mask, seq);
        pp->last_va = (int32_t)place;
        if (pairs ? !place_live(pool, pp, place) : !pg->live_blocks) {
            pp->busy_va = NF_NO_PAGE;
            idle_push_span(pool, pg->phys, pairs ? pp->span : 1);
        }
    }
}

void pages_release(nf_pool *pool, uint64_t addr, uint64_t size, uint64_t mask, uint64_t seq) {
    uint64_t first = page_of(pool, addr), last = page_last(pool, addr, size);
    if (pool->pairs) release_range(pool, first, last, mask, seq, true);
    else release_range(pool, first, last, mask, seq, false);
}

nf_status pages_make_reserve(nf_pool *pool) {
    while (held(pool) < pool->reserve_pages) {
        int32_t p;
        nf_status s = phys_create(pool, 1, &p);
        if (s != NF_OK) return s;
        idle_push(pool, p);
    }
    return NF_OK;
}

nf_status pages_trim(nf_pool *pool, uint64_t keep_pages, uint64_t *released) {
    nf_status s = NF_OK;
    if (keep_pages < pool->reserve_pages) keep_pages = pool->reserve_pages; /* held for the pool's life */
    if (pool->config.pin_pages) keep_pages = held(pool); /* its pages stay where they are */
    pool->device_full = false; /* memory given back, here or elsewhere: try creating again */
    while (held(pool) > keep_pages) {
        int32_t p = pool->idle_head[0] != NF_NO_PAGE ? pool->idle_head[0] : pool->idle_head[1];
        if (p == NF_NO_PAGE) break;
        uint8_t span = pool->phys[p].span;
        if ((s = phys_release(pool, p)) != NF_OK) break;
        *released += span * pool->gran;
    }
    /* Also after a failure: what is held above a lowered cap is the slack I11 allows. */
    uint64_t h = held(pool);
    pool->cap_slack = pool->cap_pages && h > pool->cap_pages ? h - pool->cap_pages : 0;
    return s;
}

nf_status pages_destroy(nf_pool *pool) {
    nf_status first_error = NF_OK, s;
    for (int32_t p = 0; p < (int32_t)pool->phys_used; p++) {
        phys_page *pp = &pool->phys[p];
        if (!pp->handle) continue;
        if (pp->busy_va != NF_NO_PAGE) {
            for (uint8_t i = 0; i < pp->span; i++) pool->pages[pp->busy_va + i].live_blocks = 0; /* live blocks die with the pool */
            pp->busy_va = NF_NO_PAGE;
            idle_push(pool, p);
        }
        if ((s = phys_release(pool, p)) != NF_OK && first_error == NF_OK) first_error = s;
    }
    return first_error;
}

nf_status pages_init(nf_pool *pool) {
    pool->pages = calloc(pool->page_count, sizeof *pool->pages);
    if (!pool->pages) return NF_ERR_NO_MEMORY_HOST;
    for (uint64_t v = 0; v < pool->page_count; v++) pool->pages[v].phys = pool->pages[v].alias_next = NF_NO_PAGE;
    pool->idle_head[0] = pool->idle_tail[0] = pool->idle_head[1] = pool->idle_tail[1] = NF_NO_PAGE;
    return NF_OK;
}

void pages_free(nf_pool *pool) {
    free(pool->pages);
    free(pool->phys);
    free(pool->phys_free);
}

/* ---- invariants (I6-I11 of pool_internal.h); live counts per page are checked by stats.c --- */

nf_status pages_check(nf_pool *pool) {
    uint64_t mapped = 0, idle = 0, physical = 0, lacking_access = 0;
    for (uint64_t v = 0; v < pool->page_count; v++) {
        const page *pg = &pool->pages[v];
        INVARIANT(pg->live_blocks == 0 || pg->phys != NF_NO_PAGE, "I7 page %llu has live blocks, unmapped",
              (unsigned long long)v);
        INVARIANT(pg->last_free_seq <= pool->free_seq, "I14 page %llu freed after the last free",
              (unsigned long long)v);
        if (pg->phys == NF_NO_PAGE) continue;
        INVARIANT(v < pool->mapped_end_page, "I9 page %llu mapped above mapped_end_page", (unsigned long long)v);
        mapped++;
        INVARIANT(pg->phys >= 0 && (uint64_t)pg->phys < pool->phys_used && pool->phys[pg->phys].handle,
              "I7 page %llu maps a released physical page", (unsigned long long)v);
        const phys_page *pp = &pool->phys[pg->phys];
        uint64_t place = place_of(pool, v);
        INVARIANT(pp->span == 1 || (pool->pages[place].phys == pg->phys && pool->pages[place + 1].phys == pg->phys &&
                                    pool->pages[place].no_access == pool->pages[place + 1].no_access),
              "I7 page %llu: a pair mapped in part, or its pages' access differs", (unsigned long long)v);
        INVARIANT(pg->live_blocks == 0 || pp->busy_va == (int32_t)place,
              "I7 page %llu has live blocks but its physical page is busy elsewhere", (unsigned long long)v);
        INVARIANT(pg->live_blocks == 0 || !pg->no_access, "I7 page %llu has live blocks but no access",
              (unsigned long long)v);
        lacking_access += pg->no_access;
    }
    uint64_t idle_listed[2] = {0, 0};
    for (uint64_t p = 0; p < pool->phys_used; p++) {
        const phys_page *pp = &pool->phys[p];
        if (!pp->handle) continue;
        INVARIANT(pp->span == 1 || (pp->span == 2 && pool->pairs), "I7 physical page %llu of span %u",
              (unsigned long long)p, (unsigned)pp->span);
        physical += pp->span;
        uint32_t aliases = 0;
        for (int32_t v = pp->first_alias; v != NF_NO_PAGE; v = pool->pages[v].alias_next) {
            INVARIANT(pool->pages[v].phys == (int32_t)p && (pp->span == 1 || !(v & 1)),
                  "I7 alias list of physical page %llu", (unsigned long long)p);
            INVARIANT(++aliases <= MAX_ALIASES, "I7 physical page %llu has too many aliases", (unsigned long long)p);
            INVARIANT(!place_live(pool, pp, (uint64_t)v) || pp->busy_va == v,
                  "I7 physical page %llu used through two places", (unsigned long long)p);
        }
        INVARIANT(aliases == pp->aliases, "I7 alias count of physical page %llu", (unsigned long long)p);
        if (pp->busy_va != NF_NO_PAGE) {
            INVARIANT(pool->pages[pp->busy_va].phys == (int32_t)p && place_live(pool, pp, (uint64_t)pp->busy_va),
                  "I7 physical page %llu busy without a live block", (unsigned long long)p);
        } else {
            idle += pp->span;
            idle_listed[pp->span - 1]++;
        }
    }
    uint64_t listed = 0;
    for (int k = 0; k < 2; k++) {
        uint64_t on_list = 0;
        int32_t last = NF_NO_PAGE;
        for (int32_t p = pool->idle_head[k]; p != NF_NO_PAGE; p = pool->phys[p].idle_next) {
            INVARIANT(pool->phys[p].idle_prev == last, "I8 idle list links at %d", p);
            INVARIANT(pool->phys[p].handle && pool->phys[p].busy_va == NF_NO_PAGE, "I8 busy page %d listed idle", p);
            INVARIANT(pool->phys[p].span == k + 1, "I8 page %d of span %u on the idle list of span %d", p,
                  (unsigned)pool->phys[p].span, k + 1);
            INVARIANT(++on_list <= pool->phys_used, "I8 idle list loops");
            last = p;
        }
        INVARIANT(last == pool->idle_tail[k], "I8 idle list tail");
        INVARIANT(on_list == idle_listed[k], "I8 idle physical pages of span %d: %llu listed, %llu found", k + 1,
              (unsigned long long)on_list, (unsigned long long)idle_listed[k]);
        listed += on_list * (uint64_t)(k + 1);
    }
    INVARIANT(listed == idle && idle == pool->idle_count, "I8 idle pool pages: %llu listed, %llu found, %llu counted",
          (unsigned long long)listed, (unsigned long long)idle, (unsigned long long)pool->idle_count);
    INVARIANT(pool->stats.idle_bytes.current == idle * pool->gran, "I8 idle_bytes");
    INVARIANT(pool->stats.mapped_bytes.current == mapped * pool->gran, "I9 mapped_bytes");
    INVARIANT(lacking_access == pool->pages_without_access, "I7 %llu pages lack access, %llu counted",
          (unsigned long long)lacking_access, (unsigned long long)pool->pages_without_access);
    INVARIANT(physical == pool->phys_count && pool->stats.reserved_bytes.current == physical * pool->gran,
          "I10 reserved_bytes");
    INVARIANT(physical >= pool->reserve_pages, "I16 %llu physical pages, %llu reserved", (unsigned long long)physical,
          (unsigned long long)pool->reserve_pages);
    INVARIANT(!pool->config.pin_pages || (mapped == physical && pool->stats.calls_unmap == 0 &&
                                          pool->stats.calls_page_release == 0),
          "I15 pinned pool: %llu places for %llu physical pages, %llu unmaps, %llu releases",
          (unsigned long long)mapped, (unsigned long long)physical, (unsigned long long)pool->stats.calls_unmap,
          (unsigned long long)pool->stats.calls_page_release);
    INVARIANT(!pool->cap_pages || physical <= pool->cap_pages + pool->cap_slack,
          "I11 %llu physical pages over a cap of %llu", (unsigned long long)physical,
          (unsigned long long)pool->cap_pages);
    return NF_OK;
}
