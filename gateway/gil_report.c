/*
 * The GIL over an interval, from the per-thread records (gil_records.h), without the GIL: each reader keeps its own
 * pt_gil_sampler_t (the monitor, the report) and gets the shares of holding and waiting since its last look, the
 * hand-offs between threads, the histograms and each thread's state now; and the report (--gil-report), a line per
 * interval or a table like top's when stderr is a terminal.
 */
#include "gil_records.h"

#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "../server/log.h"

static pt_gil_snap_t
snapshot(pt_gil_thread_t *t, uint64_t now)
{
    pt_gil_snap_t s;
    uint64_t hs, ws, h, w;
    uint32_t seq;

    /* A hold or wait that ends while it is read would count neither as in progress nor done: read again. */
    do {
        seq = atomic_load_explicit(&t->seq, memory_order_acquire);
        hs = atomic_load_explicit(&t->holding_since, memory_order_relaxed);
        ws = atomic_load_explicit(&t->waiting_since, memory_order_relaxed);
        h = atomic_load_explicit(&t->hold_ns, memory_order_relaxed);
        w = atomic_load_explicit(&t->wait_ns, memory_order_relaxed);
        atomic_thread_fence(memory_order_acquire);
    } while ((seq & 1) != 0 || atomic_load_explicit(&t->seq, memory_order_relaxed) != seq);
    s.hold = h + (hs && now > hs ? now - hs : 0);
    s.wait = w + (ws && now > ws ? now - ws : 0);
    s.acq = atomic_load_explicit(&t->acquisitions, memory_order_relaxed);
    s.forced = atomic_load_explicit(&t->forced, memory_order_relaxed);
    s.timeouts = atomic_load_explicit(&t->timeouts, memory_order_relaxed);
    s.cpu = 0;
    if (t->cpu_clock != (clockid_t)-1) {
        struct timespec ts;

        /* fails once the thread has exited: pt_gil_sample keeps the last reading then */
        if (clock_gettime(t->cpu_clock, &ts) == 0) {
            s.cpu = (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
        }
    }
    return s;
}

/* One thread's part of a view: its totals, histograms and state now, and its shares of the `span` ns since `last`. */
static void
thread_view(pt_gil_thread_t *t, pt_gil_thread_view_t *tv, const pt_gil_snap_t *s, const pt_gil_snap_t *last,
            double span)
{
    pt_gil_label_get(t, tv->name, tv->role);
    tv->tid = t->tid;
    for (int k = 0; k < BUCKETS; k++) {
        tv->hold_hist[k] = atomic_load_explicit(&t->hold_hist[k], memory_order_relaxed);
        tv->wait_hist[k] = atomic_load_explicit(&t->wait_hist[k], memory_order_relaxed);
    }
    tv->hold_pct = 100.0 * (double)(s->hold - last->hold) / span;
    tv->wait_pct = 100.0 * (double)(s->wait - last->wait) / span;
    tv->cpu_pct = s->cpu > last->cpu ? 100.0 * (double)(s->cpu - last->cpu) / span : 0;
    if (atomic_load_explicit(&t->holding_since, memory_order_relaxed)) {
        tv->state = 'H';
    } else if (atomic_load_explicit(&t->waiting_since, memory_order_relaxed)) {
        tv->state = 'W';
    } else {
        tv->state = 'R';
    }
    tv->total = *s;
}

/* Cumulative hand-offs between the first PAIRS threads; at[] maps a thread's record index to its view index. */
static void
pairs_view(pt_gil_view_t *v, int n, const int *at)
{
    for (int i = 0; i < n && i < PAIRS; i++) {
        for (int j = 0; j < n && j < PAIRS && at[i] >= 0; j++) {
            uint64_t c = atomic_load_explicit(&pt_gil_threads[i].from[j], memory_order_relaxed);

            if (c && at[j] >= 0 && v->npairs < PT_GIL_MAX_PAIRS) {
                v->pairs[v->npairs++] = (pt_gil_pair_t){ at[j], at[i], c };
            }
        }
    }
}

/* ASGI's loop: the share of the span it ran Python callbacks, and (for the sampler that takes it) the longest. */
static void
loop_view(pt_gil_sampler_t *sm, pt_gil_view_t *v, double span)
{
    uint64_t busy = atomic_load_explicit(&pt_gil_loop_busy_ns, memory_order_relaxed);

    v->loops = atomic_load_explicit(&pt_gil_loops, memory_order_relaxed);
    v->loop_busy_pct = 100.0 * (double)(busy - sm->loop_busy) / span / (v->loops > 0 ? v->loops : 1);
    v->loop_busy_total_ns = busy;
    sm->loop_busy = busy;
    if (sm->takes_lag) {
        v->loop_lag_max_ms = (double)atomic_exchange_explicit(&pt_gil_loop_lag_max_ns, 0, memory_order_relaxed) / 1e6;
    }
}

int
pt_gil_sample(pt_gil_sampler_t *sm, pt_gil_view_t *v)
{
    uint64_t now = pt_gil_now_ns(), h = atomic_load_explicit(&pt_gil_handoffs, memory_order_relaxed);
    int i, n = atomic_load_explicit(&pt_gil_nthreads, memory_order_relaxed);
    int at[PAIRS]; /* record index -> view index, for the hand-off pairs */
    double span;

    memset(v, 0, sizeof(*v));
    v->exact = pt_gil_exact;
    v->gil = (int)pt_gil_state(&v->gil_why);
    v->interval_us = pt_gil_probe_interval_us();
    v->waiters = atomic_load_explicit(&pt_gil_waiters, memory_order_relaxed);
    v->handoffs_total = h;
    if (sm->at == 0) {
        sm->at = now;
        for (i = 0; i < n; i++) {
            sm->last[i] = snapshot(&pt_gil_threads[i], now);
        }
        sm->handoffs = h;
        return -1; /* the baseline: nothing to say yet */
    }
    span = (double)(now - sm->at);
    if (span <= 0) {
        return -1;
    }
    v->span_s = span / 1e9;
    v->end_ns = now;
    for (i = 0; i < PAIRS; i++) {
        at[i] = -1;
    }
    for (i = 0; i < n; i++) {
        pt_gil_thread_t *t = &pt_gil_threads[i];
        pt_gil_thread_view_t *tv = &v->threads[v->nthreads];
        pt_gil_snap_t s;

        if (!atomic_load_explicit(&t->used, memory_order_acquire)) {
            continue;
        }
        s = snapshot(t, now);
        if (s.cpu == 0) {
            s.cpu = sm->last[i].cpu; /* the thread has exited */
        }
        thread_view(t, tv, &s, &sm->last[i], span);
        v->cpu_pct += tv->cpu_pct;
        if (i < PAIRS) {
            at[i] = v->nthreads;
        }
        v->busy_pct += tv->hold_pct;
        v->forced_per_s += (double)(s.forced - sm->last[i].forced) * 1e9 / span;
        v->nthreads++;
        sm->last[i] = s;
    }
    pairs_view(v, n, at);
    v->switches_per_s = (double)(h - sm->handoffs) * 1e9 / span;
    loop_view(sm, v, span);
    if (v->busy_pct > 100 && v->gil != PT_GIL_NONE) {
        v->busy_pct = 100; /* the snapshots are not one instant: a hair over 100 is rounding */
    }
    sm->handoffs = h;
    sm->at = now;
    return 0;
}
/* ---- the report: one line per interval, from the loop, without the GIL ---- */

/* "5000 us", or "unknown" where the probe does not know this CPython's GIL (its fallback): the interval is a field
 * of the GIL it reads, and the report never takes the GIL to ask sys.getswitchinterval(). */
static const char *
interval_text(const pt_gil_view_t *v, char *buf, size_t cap)
{
    if (v->interval_us == 0) {
        return "unknown";
    }
    snprintf(buf, cap, "%lu us", v->interval_us);
    return buf;
}

static const char *
state_name(char state, bool none)
{
    if (state == 'H') {
        return none ? "python" : "hold";
    }
    if (state == 'W') {
        return none ? "lock" : "wait";
    }
    return none ? "outside" : "run";
}

/* The terminal table without a GIL: per thread, running Python (attached) and waiting for a lock (parked). */
static size_t
no_gil_table(const pt_gil_view_t *v, char *buf, size_t cap)
{
    size_t len = (size_t)snprintf(
        buf, cap,
        "\033[H\033[J"
        "ponte   no GIL (free-threaded)   %.2f threads running Python at once, on %.2f CPUs   "
        "%d waiting for a lock\n\n%-20s %-7s %7s %7s %7s\n",
        v->busy_pct / 100.0, v->cpu_pct / 100.0, v->waiters, "THREAD", "STATE", "PYTHON%", "LOCK%", "CPU%");

    for (int i = 0; i < v->nthreads && len < cap - 100; i++) {
        const pt_gil_thread_view_t *t = &v->threads[i];

        len += (size_t)snprintf(buf + len, cap - len, "%-20.20s %-7s %7.1f %7.1f %7.1f\n", t->name,
                                state_name(t->state, true), t->hold_pct, t->wait_pct, t->cpu_pct);
    }
    return len;
}

/* The terminal view: a per-thread table redrawn in place, like top, when stderr is a terminal. */
static void
report_table(const pt_gil_view_t *v)
{
    char buf[8192], iv[24];
    size_t len = 0;
    int i;

    if (v->gil == PT_GIL_NONE) {
        len = no_gil_table(v, buf, sizeof(buf));
        if (write(STDERR_FILENO, buf, len) < 0) {
            return;
        }
        return;
    }
    len += (size_t)snprintf(buf + len, sizeof(buf) - len,
                            "\033[H\033[J"
                            "ponte GIL   busy %5.1f%%   waiting %d   switches/s %.0f   forced/s %.0f   "
                            "interval %s%s\n\n%-20s %-7s %7s %7s %12s %10s\n",
                            v->busy_pct, v->waiters, v->switches_per_s, v->forced_per_s,
                            interval_text(v, iv, sizeof(iv)), v->exact ? "" : "   (timing ponte's own moves only)",
                            "THREAD", "STATE", "HOLD%", "WAIT%", "ACQUIRED", "FORCED");
    for (i = 0; i < v->nthreads && len < sizeof(buf) - 100; i++) {
        const pt_gil_thread_view_t *t = &v->threads[i];

        len += (size_t)snprintf(buf + len, sizeof(buf) - len, "%-20.20s %-7s %7.1f %7.1f %12llu %10llu\n", t->name,
                                state_name(t->state, false), t->hold_pct, t->wait_pct, (unsigned long long)t->total.acq,
                                (unsigned long long)t->total.forced);
    }
    if (write(STDERR_FILENO, buf, len) < 0) {
        return;
    }
}

void
pt_gil_report(void)
{
    static pt_gil_sampler_t sampler;
    static pt_gil_view_t v;
    char line[2048];
    char loop[80] = "", iv[24];
    size_t len = 0;
    int i;

    if (pt_gil_sample(&sampler, &v) < 0) {
        return;
    }
    if (isatty(STDERR_FILENO)) {
        report_table(&v);
        return;
    }
    for (i = 0; i < v.nthreads && len < sizeof(line) - 80; i++) {
        const pt_gil_thread_view_t *t = &v.threads[i];

        if (t->hold_pct >= 0.1 || t->wait_pct >= 0.1) {
            len += (size_t)snprintf(line + len, sizeof(line) - len, " %s=%.1f%%/%.1f%%", t->name, t->hold_pct,
                                    t->wait_pct);
        }
    }
    if (v.loop_busy_total_ns) {
        if (v.loops > 1) {
            snprintf(loop, sizeof(loop), ", asyncio loops busy %.1f%% (the mean of %d)", v.loop_busy_pct, v.loops);
        } else {
            snprintf(loop, sizeof(loop), ", asyncio loop busy %.1f%%", v.loop_busy_pct);
        }
    }
    if (v.gil == PT_GIL_NONE) {
        /* No GIL: what ponte's threads spent attached (running Python), side by side, and each thread's waits for a
         * lock (parked). */
        pt_log_info("gil: none (free-threaded), %.2f of ponte's threads ran Python at once, on %.2f CPUs, %d waiting "
                    "for a lock%s, last %.2f s; python/lock:%s",
                    v.busy_pct / 100.0, v.cpu_pct / 100.0, v.waiters, loop, v.span_s, len ? line : " (idle)");
    } else {
        pt_log_info("gil: busy %.1f%%, %d waiting, %.0f switches/s, %.0f forced/s, interval %s%s, last %.2f s; "
                    "hold/wait:%s",
                    v.busy_pct, v.waiters, v.switches_per_s, v.forced_per_s, interval_text(&v, iv, sizeof(iv)), loop,
                    v.span_s, len ? line : " (idle)");
    }
    pt_gil_trace_report_window(&v);
}
