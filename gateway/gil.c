/*
 * The GIL, measured. Every GIL move of ponte's own threads goes through pt_gil_acquire/pt_gil_release; every
 * GIL transition of every thread (the interpreter's forced switches, time.sleep, I/O inside the app, threads the
 * app starts) arrives through the probe (gil_probe.c) as pt_gil_on_*.
 *
 * Each thread owns one record and is the only writer of its fields (relaxed atomics); a reader (the report timer,
 * later the monitor) sums them without locks. The hooks run inside CPython's GIL critical sections: no locks, no
 * allocation, two clock reads at most.
 */
#include "gateway.h"

#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "../server/log.h"

#define MAX_THREADS PT_GIL_MAX_THREADS

/* --gil-trace: each thread appends its spans to its own ring (single producer); the loop drains them (single
 * consumer) to the file. A full ring drops spans and counts them, never blocks. */
#define TRACE_RING 8192

typedef struct {
    uint64_t ts, dur; /* ns since the trace started */
    char kind;        /* 'H' held, 'W' waited, 'R' request */
    char label[47];
} pt_trace_ev_t;

typedef struct {
    pt_trace_ev_t *ev;
    _Atomic uint32_t head, tail;
    _Atomic uint64_t dropped;
    bool named; /* the thread_name metadata event was written */
} pt_trace_ring_t;

#define PAIRS PT_GIL_PAIR_THREADS
#define BUCKETS PT_GIL_HIST_BUCKETS

typedef struct {
    _Atomic int used;
    pid_t tid;
    int index;
    char name[32];
    char role[8];
    _Atomic uint64_t hold_ns, wait_ns; /* completed holds and waits */
    _Atomic uint64_t holding_since;    /* 0 when not holding */
    _Atomic uint64_t waiting_since;    /* 0 when not waiting */
    _Atomic uint64_t acquisitions, forced, timeouts;
    _Atomic uint64_t from[PAIRS]; /* hand-offs to this thread, by the index of the thread that had it */
    _Atomic uint64_t hold_hist[BUCKETS], wait_hist[BUCKETS]; /* durations, by power of two (see bucket()) */
    _Atomic int route1; /* the route this thread's Python works for, plus one (0: none), for the sampler */
    pt_trace_ring_t trace;
} pt_gil_thread_t;

static pt_gil_thread_t threads[MAX_THREADS];
static _Atomic int nthreads;
/* The thread's record, read on every GIL event: initial-exec, one load instead of a call to __tls_get_addr in the
 * module python3 dlopens, for 8 of the bytes of static TLS glibc keeps spare for such modules. */
static _Thread_local pt_gil_thread_t *self __attribute__((tls_model("initial-exec")));
static _Thread_local char pending_name[32];
static _Thread_local char pending_role[8];
static _Atomic(pt_gil_thread_t *) last_taker;
static _Atomic uint64_t handoffs;
static _Atomic int waiters;
static bool exact;            /* the probe sees every transition; else only ponte's own moves are timed */
static bool measuring = true; /* --gil-probe off: nothing at all (to measure what measuring costs) */
static bool tracing;
static _Atomic uint64_t loop_busy_ns;    /* ASGI: time the loop spent in Python callbacks between selects */
static _Atomic uint64_t loop_lag_max_ns; /* the longest such stretch since the monitor last looked */
static uint64_t trace_t0;
static pid_t trace_consumer; /* the thread that drains the rings (the loop thread, which opened the trace) */

static void
trace_append(pt_gil_thread_t *t, char kind, uint64_t start, uint64_t end, const char *label)
{
    uint32_t head, tail;
    pt_trace_ev_t *e;

    if (start < trace_t0) {
        return;
    }
    if (t->trace.ev == NULL) {
        t->trace.ev = calloc(TRACE_RING, sizeof(pt_trace_ev_t)); /* once per thread */
        if (t->trace.ev == NULL) {
            return;
        }
    }
    head = atomic_load_explicit(&t->trace.head, memory_order_relaxed);
    tail = atomic_load_explicit(&t->trace.tail, memory_order_acquire);
    if (head - tail >= TRACE_RING && t->tid == trace_consumer) {
        /* The consumer's own ring is full while it cannot reach the flush timer (importing the app: Django's
         * migrations retake the GIL around every sqlite call): it drains the rings itself. */
        pt_gil_trace_flush();
        tail = atomic_load_explicit(&t->trace.tail, memory_order_acquire);
    }
    if (head - tail >= TRACE_RING) {
        atomic_fetch_add_explicit(&t->trace.dropped, 1, memory_order_relaxed);
        return;
    }
    e = &t->trace.ev[head % TRACE_RING];
    e->ts = start - trace_t0;
    e->dur = end - start;
    e->kind = kind;
    if (label != NULL) {
        snprintf(e->label, sizeof(e->label), "%s", label);
    } else {
        e->label[0] = '\0';
    }
    atomic_store_explicit(&t->trace.head, head + 1, memory_order_release);
}

/* Appends a span when --gil-trace is on; off, it costs the probe's events one test. */
static inline void
trace_push(pt_gil_thread_t *t, char kind, uint64_t start, uint64_t end, const char *label)
{
    if (__builtin_expect(tracing, 0)) {
        trace_append(t, kind, start, end, label);
    }
}

static uint64_t
now_ns(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* Bucket k holds durations below 2^(k+10) ns (1.02 µs, 2.05 µs, ... 1.07 s); the last one everything longer. */
static int
bucket(uint64_t ns)
{
    int bits = ns ? 64 - __builtin_clzll(ns) : 0;

    return bits <= 10 ? 0 : bits - 10 >= BUCKETS - 1 ? BUCKETS - 1 : bits - 10;
}

double
pt_gil_bucket_le_s(int k)
{
    return k >= BUCKETS - 1 ? -1 : (double)(1ull << (k + 10)) / 1e9;
}

static pt_gil_thread_t *
enrol(void)
{
    int i = atomic_fetch_add_explicit(&nthreads, 1, memory_order_relaxed);

    if (i >= MAX_THREADS) {
        atomic_fetch_sub_explicit(&nthreads, 1, memory_order_relaxed);
        return NULL; /* beyond what we track: the thread goes uncounted */
    }
    self = &threads[i];
    self->index = i;
    self->tid = (pid_t)syscall(SYS_gettid);
    snprintf(self->role, sizeof(self->role), "%s", pending_role[0] ? pending_role : "app");
    if (pending_name[0]) {
        memcpy(self->name, pending_name, sizeof(self->name));
    } else if (pthread_getname_np(pthread_self(), self->name, sizeof(self->name)) != 0 || !self->name[0]) {
        snprintf(self->name, sizeof(self->name), "thread-%d", (int)self->tid);
    }
    atomic_store_explicit(&self->used, 1, memory_order_release);
    return self;
}

/* This thread's record, made on its first GIL event. */
static inline pt_gil_thread_t *
me(void)
{
    return __builtin_expect(self != NULL, 1) ? self : enrol();
}

void
pt_gil_thread_name(const char *name, const char *role)
{
    snprintf(pending_name, sizeof(pending_name), "%s", name);
    snprintf(pending_role, sizeof(pending_role), "%s", role);
    if (self != NULL) {
        memcpy(self->name, pending_name, sizeof(self->name));
        memcpy(self->role, pending_role, sizeof(self->role));
    }
}

/* Threads the app starts take the GIL (and get a record) before their Python code runs: threading's bootstrap
 * is wrapped to pass the thread's name down as soon as it runs, and to the OS (top -H, perf, gdb show it). */
static PyObject *
name_python_thread(PyObject *mod, PyObject *name)
{
    const char *s = PyUnicode_Check(name) ? PyUnicode_AsUTF8(name) : NULL;
    char os_name[16];

    if (s == NULL) {
        PyErr_Clear();
        Py_RETURN_NONE;
    }
    pt_gil_thread_name(s, "app");
    snprintf(os_name, sizeof(os_name), "%s", s);
    pthread_setname_np(pthread_self(), os_name);
    Py_RETURN_NONE;
}

static PyMethodDef name_def = { "name_thread", name_python_thread, METH_O, "name this thread in ponte's GIL view" };

int
pt_gil_name_python_threads(void)
{
    static const char src[] = "import threading\n"
                              "def _install(name_thread):\n"
                              "    inner = threading.Thread._bootstrap_inner\n"
                              "    def _bootstrap_inner(self):\n"
                              "        name_thread(self.name)\n"
                              "        inner(self)\n"
                              "    threading.Thread._bootstrap_inner = _bootstrap_inner\n";
    PyObject *ns = pt_py_exec(src), *fn = PyCFunction_New(&name_def, NULL), *r = NULL;

    if (ns != NULL && fn != NULL) {
        r = PyObject_CallFunctionObjArgs(PyDict_GetItemString(ns, "_install"), fn, NULL); /* borrowed */
    }
    Py_XDECREF(ns);
    Py_XDECREF(fn);
    if (r == NULL) {
        return -1;
    }
    Py_DECREF(r);
    return 0;
}

/* ---- transitions (from the probe, or from pt_gil_acquire/release when the probe is blind) ---- */

void
pt_gil_on_wait(void)
{
    pt_gil_thread_t *t = me();

    if (t != NULL && atomic_load_explicit(&t->waiting_since, memory_order_relaxed) == 0) {
        atomic_store_explicit(&t->waiting_since, now_ns(), memory_order_relaxed);
        atomic_fetch_add_explicit(&waiters, 1, memory_order_relaxed);
    }
}

void
pt_gil_on_wait_timeout(void)
{
    pt_gil_thread_t *t = me();

    if (t != NULL) {
        atomic_fetch_add_explicit(&t->timeouts, 1, memory_order_relaxed);
    }
}

void
pt_gil_on_taken(void)
{
    pt_gil_thread_t *t = me(), *prev;
    uint64_t now, since;

    if (t == NULL) {
        return;
    }
    now = now_ns();
    since = atomic_exchange_explicit(&t->waiting_since, 0, memory_order_relaxed);
    if (since != 0) {
        atomic_fetch_add_explicit(&t->wait_ns, now - since, memory_order_relaxed);
        atomic_fetch_add_explicit(&t->wait_hist[bucket(now - since)], 1, memory_order_relaxed);
        atomic_fetch_sub_explicit(&waiters, 1, memory_order_relaxed);
        trace_push(t, 'W', since, now, NULL);
    }
    atomic_store_explicit(&t->holding_since, now, memory_order_relaxed);
    atomic_fetch_add_explicit(&t->acquisitions, 1, memory_order_relaxed);
    prev = atomic_exchange_explicit(&last_taker, t, memory_order_relaxed);
    if (prev != NULL && prev != t) {
        atomic_fetch_add_explicit(&handoffs, 1, memory_order_relaxed);
        if (prev->index < PAIRS) {
            atomic_fetch_add_explicit(&t->from[prev->index], 1, memory_order_relaxed);
        }
    }
}

void
pt_gil_on_dropped(void)
{
    pt_gil_thread_t *t = me();
    uint64_t since;

    if (t == NULL) {
        return;
    }
    since = atomic_exchange_explicit(&t->holding_since, 0, memory_order_relaxed);
    if (since != 0) {
        uint64_t now = now_ns();

        atomic_fetch_add_explicit(&t->hold_ns, now - since, memory_order_relaxed);
        atomic_fetch_add_explicit(&t->hold_hist[bucket(now - since)], 1, memory_order_relaxed);
        trace_push(t, 'H', since, now, NULL);
    }
}

void
pt_gil_loop_busy(uint64_t ns)
{
    uint64_t max = atomic_load_explicit(&loop_lag_max_ns, memory_order_relaxed);

    atomic_fetch_add_explicit(&loop_busy_ns, ns, memory_order_relaxed);
    while (ns > max
           && !atomic_compare_exchange_weak_explicit(&loop_lag_max_ns, &max, ns, memory_order_relaxed,
                                                     memory_order_relaxed)) {
    }
}

uint64_t
pt_gil_my_wait_ns(void)
{
    pt_gil_thread_t *t = me();

    return t ? atomic_load_explicit(&t->wait_ns, memory_order_relaxed) : 0;
}

uint64_t
pt_gil_my_use(uint64_t *hold, uint64_t *wait)
{
    pt_gil_thread_t *t = me();
    uint64_t since, now = now_ns();

    if (t == NULL) {
        *hold = *wait = 0;
        return now;
    }
    *hold = atomic_load_explicit(&t->hold_ns, memory_order_relaxed);
    *wait = atomic_load_explicit(&t->wait_ns, memory_order_relaxed);
    since = atomic_load_explicit(&t->holding_since, memory_order_relaxed);
    *hold += since != 0 && now > since ? now - since : 0;
    since = atomic_load_explicit(&t->waiting_since, memory_order_relaxed);
    *wait += since != 0 && now > since ? now - since : 0;
    return now;
}

int
pt_gil_set_route(int route)
{
    pt_gil_thread_t *t = me();

    return t ? atomic_exchange_explicit(&t->route1, route + 1, memory_order_relaxed) - 1 : -1;
}

int
pt_gil_thread_route(unsigned long tid, int *route)
{
    int i, n = atomic_load_explicit(&nthreads, memory_order_acquire);

    for (i = 0; i < n; i++) {
        if (atomic_load_explicit(&threads[i].used, memory_order_acquire) && (unsigned long)threads[i].tid == tid) {
            *route = atomic_load_explicit(&threads[i].route1, memory_order_relaxed) - 1;
            return i;
        }
    }
    *route = -1;
    return -1;
}

bool
pt_gil_tracing(void)
{
    return tracing;
}

uint64_t
pt_gil_now(void)
{
    return now_ns();
}

void
pt_gil_trace_request(uint64_t start_ns, const char *label)
{
    pt_gil_thread_t *t = me();

    if (t != NULL && tracing) {
        trace_push(t, 'R', start_ns, now_ns(), label);
    }
}

/* ---- the trace file: Chrome trace-event JSON, drained from the rings by the loop ---- */

static FILE *trace_file;
static bool trace_first = true, trace_first_report = true;

static void trace_write(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

static void
trace_write(const char *fmt, ...)
{
    va_list ap;

    fputs(trace_first ? "[\n" : ",\n", trace_file);
    trace_first = false;
    va_start(ap, fmt);
    vfprintf(trace_file, fmt, ap);
    va_end(ap);
}

const char *
pt_gil_process_path(const pt_config_t *cfg, const char *path, char *buf, size_t cap)
{
    if (cfg->worker_slot) {
        snprintf(buf, cap, "%s.%d", path, cfg->worker_slot);
    } else {
        snprintf(buf, cap, "%s", path);
    }
    return buf;
}

int
pt_gil_trace_open(const char *path)
{
    trace_file = fopen(path, "w");
    if (trace_file == NULL) {
        return -errno;
    }
    trace_t0 = now_ns();
    trace_consumer = (pid_t)syscall(SYS_gettid);
    tracing = true;
    /* ts 0 is CLOCK_MONOTONIC's monotonic_ns (also perf's clock, and Python's time.monotonic_ns()). */
    trace_write("{\"name\":\"process_name\",\"ph\":\"M\",\"pid\":%d,\"args\":{\"name\":\"ponte %d\","
                "\"monotonic_ns\":%llu}}",
                (int)getpid(), (int)getpid(), (unsigned long long)trace_t0);
    return 0;
}

void
pt_gil_trace_flush(void)
{
    int i, n = atomic_load_explicit(&nthreads, memory_order_relaxed), pid = (int)getpid();

    if (trace_file == NULL) {
        return;
    }
    for (i = 0; i < n; i++) {
        pt_gil_thread_t *t = &threads[i];
        uint32_t head, tail;

        if (!atomic_load_explicit(&t->used, memory_order_acquire)) {
            continue;
        }
        if (!t->trace.named) {
            t->trace.named = true;
            trace_write("{\"name\":\"thread_name\",\"ph\":\"M\",\"pid\":%d,\"tid\":%d,\"args\":{\"name\":\"%s\"}}", pid,
                        (int)t->tid, t->name);
        }
        head = atomic_load_explicit(&t->trace.head, memory_order_acquire);
        tail = atomic_load_explicit(&t->trace.tail, memory_order_relaxed);
        for (; tail != head; tail++) {
            const pt_trace_ev_t *e = &t->trace.ev[tail % TRACE_RING];
            const char *name = e->kind == 'H' ? "holding the GIL" : e->kind == 'W' ? "waiting for the GIL" : "request";
            const char *cat = e->kind == 'R' ? "request" : "gil";
            char label[sizeof(e->label) * 2];
            size_t j, k = 0;

            for (j = 0; e->label[j] && k < sizeof(label) - 2; j++) {
                if (e->label[j] == '"' || e->label[j] == '\\') {
                    label[k++] = '\\';
                }
                label[k++] = (unsigned char)e->label[j] < 0x20 ? '?' : e->label[j];
            }
            label[k] = '\0';
            trace_write(
                "{\"name\":\"%s\",\"cat\":\"%s\",\"ph\":\"X\",\"pid\":%d,\"tid\":%d,\"ts\":%.3f,\"dur\":%.3f%s%s%s}",
                e->kind == 'R' && label[0] ? label : name, cat, pid, (int)t->tid, (double)e->ts / 1000.0,
                (double)e->dur / 1000.0, e->kind == 'R' ? ",\"args\":{\"request\":\"" : "", e->kind == 'R' ? label : "",
                e->kind == 'R' ? "\"}" : "");
        }
        atomic_store_explicit(&t->trace.tail, tail, memory_order_release);
    }
    pt_gil_sampler_trace(trace_write, pid, trace_t0);
    fflush(trace_file);
}

void
pt_gil_trace_close(void)
{
    int i, n = atomic_load_explicit(&nthreads, memory_order_relaxed);
    uint64_t dropped = 0;

    if (trace_file == NULL) {
        return;
    }
    pt_gil_trace_flush();
    tracing = false;
    for (i = 0; i < n; i++) {
        dropped += atomic_load_explicit(&threads[i].trace.dropped, memory_order_relaxed);
    }
    fputs(trace_first ? "[]\n" : "\n]\n", trace_file);
    fclose(trace_file);
    trace_file = NULL;
    if (dropped) {
        pt_log_warning("--gil-trace dropped %llu spans (a ring filled faster than it was written)",
                       (unsigned long long)dropped);
    }
}

void
pt_gil_on_forced(void)
{
    pt_gil_thread_t *t = me();

    if (t != NULL) {
        atomic_fetch_add_explicit(&t->forced, 1, memory_order_relaxed);
    }
}

/* ---- ponte's own moves ---- */

void
pt_gil_acquire(PyThreadState *ts)
{
    bool timed = !exact && measuring;

    if (timed) {
        pt_gil_on_wait();
    }
    PyEval_RestoreThread(ts);
    if (timed) {
        pt_gil_on_taken();
    }
}

PyThreadState *
pt_gil_release(void)
{
    if (!exact && measuring) {
        pt_gil_on_dropped();
    }
    return PyEval_SaveThread();
}

/* ---- start-up: turn the probe on and check that it sees the GIL move ---- */

const char *
pt_gil_start(bool on)
{
    pt_gil_thread_t *t;
    uint64_t before;
    PyThreadState *ts;
    char why[160];

    pt_gil_thread_name("loop", "loop");
    if (!on) {
        measuring = false;
        return "off (--gil-probe off)";
    }
    if (pt_gil_probe_start(why, sizeof(why)) < 0) {
        static char msg[256];

        exact = false;
        snprintf(msg, sizeof(msg), "timing ponte's own acquire/release only (%s)", why);
        return msg;
    }
    /* We hold the GIL now: that is the state the probe starts in, a hold like any other (one acquisition, one
     * span in the trace), taken before the probe could see it. */
    t = me();
    if (t != NULL) {
        atomic_store_explicit(&t->holding_since, now_ns(), memory_order_relaxed);
        atomic_fetch_add_explicit(&t->acquisitions, 1, memory_order_relaxed);
        atomic_store_explicit(&last_taker, t, memory_order_relaxed);
    }
    before = t ? atomic_load_explicit(&t->acquisitions, memory_order_relaxed) : 0;
    exact = true;
    ts = PyEval_SaveThread();
    PyEval_RestoreThread(ts);
    if (t == NULL || atomic_load_explicit(&t->acquisitions, memory_order_relaxed) == before) {
        pt_gil_probe_stop();
        exact = false;
        return "timing ponte's own acquire/release only (the probe saw no GIL transition)";
    }
    return "exact (every acquire and release, all threads)";
}

/* ---- sampling: per-interval shares, for the report and the monitor (each keeps its own sampler) ---- */

static pt_gil_snap_t
snapshot(pt_gil_thread_t *t, uint64_t now)
{
    pt_gil_snap_t s;
    uint64_t hs = atomic_load_explicit(&t->holding_since, memory_order_relaxed);
    uint64_t ws = atomic_load_explicit(&t->waiting_since, memory_order_relaxed);

    s.hold = atomic_load_explicit(&t->hold_ns, memory_order_relaxed) + (hs && now > hs ? now - hs : 0);
    s.wait = atomic_load_explicit(&t->wait_ns, memory_order_relaxed) + (ws && now > ws ? now - ws : 0);
    s.acq = atomic_load_explicit(&t->acquisitions, memory_order_relaxed);
    s.forced = atomic_load_explicit(&t->forced, memory_order_relaxed);
    s.timeouts = atomic_load_explicit(&t->timeouts, memory_order_relaxed);
    return s;
}

/* One thread's part of a view: its totals, histograms and state now, and its shares of the `span` ns since `last`. */
static void
thread_view(pt_gil_thread_t *t, pt_gil_thread_view_t *tv, const pt_gil_snap_t *s, const pt_gil_snap_t *last,
            double span)
{
    memcpy(tv->name, t->name, sizeof(tv->name));
    memcpy(tv->role, t->role, sizeof(tv->role));
    tv->name[sizeof(tv->name) - 1] = tv->role[sizeof(tv->role) - 1] = '\0';
    tv->tid = t->tid;
    for (int k = 0; k < BUCKETS; k++) {
        tv->hold_hist[k] = atomic_load_explicit(&t->hold_hist[k], memory_order_relaxed);
        tv->wait_hist[k] = atomic_load_explicit(&t->wait_hist[k], memory_order_relaxed);
    }
    tv->hold_pct = 100.0 * (double)(s->hold - last->hold) / span;
    tv->wait_pct = 100.0 * (double)(s->wait - last->wait) / span;
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
            uint64_t c = atomic_load_explicit(&threads[i].from[j], memory_order_relaxed);

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
    uint64_t busy = atomic_load_explicit(&loop_busy_ns, memory_order_relaxed);

    v->loop_busy_pct = 100.0 * (double)(busy - sm->loop_busy) / span;
    v->loop_busy_total_ns = busy;
    sm->loop_busy = busy;
    if (sm->takes_lag) {
        v->loop_lag_max_ms = (double)atomic_exchange_explicit(&loop_lag_max_ns, 0, memory_order_relaxed) / 1e6;
    }
}

int
pt_gil_sample(pt_gil_sampler_t *sm, pt_gil_view_t *v)
{
    uint64_t now = now_ns(), h = atomic_load_explicit(&handoffs, memory_order_relaxed);
    int i, n = atomic_load_explicit(&nthreads, memory_order_relaxed);
    int at[PAIRS]; /* record index -> view index, for the hand-off pairs */
    double span;

    memset(v, 0, sizeof(*v));
    v->exact = exact;
    v->interval_us = pt_gil_probe_interval_us();
    v->waiters = atomic_load_explicit(&waiters, memory_order_relaxed);
    v->handoffs_total = h;
    if (sm->at == 0) {
        sm->at = now;
        for (i = 0; i < n; i++) {
            sm->last[i] = snapshot(&threads[i], now);
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
        pt_gil_thread_t *t = &threads[i];
        pt_gil_thread_view_t *tv = &v->threads[v->nthreads];
        pt_gil_snap_t s;

        if (!atomic_load_explicit(&t->used, memory_order_acquire)) {
            continue;
        }
        s = snapshot(t, now);
        thread_view(t, tv, &s, &sm->last[i], span);
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
    if (v->busy_pct > 100) {
        v->busy_pct = 100; /* the snapshots are not one instant: a hair over 100 is rounding */
    }
    sm->handoffs = h;
    sm->at = now;
    return 0;
}

/* ---- the report: one line per interval, from the loop, without the GIL ---- */

static const char *
state_name(char state)
{
    if (state == 'H') {
        return "hold";
    }
    return state == 'W' ? "wait" : "run";
}

/* The terminal view: a per-thread table redrawn in place, like top, when stderr is a terminal. */
static void
report_table(const pt_gil_view_t *v)
{
    char buf[8192];
    size_t len = 0;
    int i;

    len += (size_t)snprintf(buf + len, sizeof(buf) - len,
                            "\033[H\033[J"
                            "ponte GIL   busy %5.1f%%   waiting %d   switches/s %.0f   forced/s %.0f   "
                            "interval %lu us%s\n\n%-20s %-7s %7s %7s %12s %10s\n",
                            v->busy_pct, v->waiters, v->switches_per_s, v->forced_per_s, v->interval_us,
                            v->exact ? "" : "   (timing ponte's own moves only)", "THREAD", "STATE", "HOLD%", "WAIT%",
                            "ACQUIRED", "FORCED");
    for (i = 0; i < v->nthreads && len < sizeof(buf) - 100; i++) {
        const pt_gil_thread_view_t *t = &v->threads[i];

        len += (size_t)snprintf(buf + len, sizeof(buf) - len, "%-20.20s %-7s %7.1f %7.1f %12llu %10llu\n", t->name,
                                state_name(t->state), t->hold_pct, t->wait_pct, (unsigned long long)t->total.acq,
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
    char loop[48] = "";
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
        snprintf(loop, sizeof(loop), ", asyncio loop busy %.1f%%", v.loop_busy_pct);
    }
    pt_log_info("gil: busy %.1f%%, %d waiting, %.0f switches/s, %.0f forced/s, interval %lu us%s, last %.2f s; "
                "hold/wait:%s",
                v.busy_pct, v.waiters, v.switches_per_s, v.forced_per_s, v.interval_us, loop, v.span_s,
                len ? line : " (idle)");
    if (trace_file != NULL && v.end_ns - (uint64_t)(v.span_s * 1e9) >= trace_t0) {
        /* The window the line covers, on a track of its own, so the log and the trace can be read together. */
        if (trace_first_report) {
            trace_first_report = false;
            trace_write("{\"name\":\"thread_name\",\"ph\":\"M\",\"pid\":%d,\"tid\":0,\"args\":{\"name\":"
                        "\"--gil-report windows\"}}",
                        (int)getpid());
        }
        trace_write("{\"name\":\"gil report\",\"cat\":\"report\",\"ph\":\"X\",\"pid\":%d,\"tid\":0,\"ts\":%.3f,"
                    "\"dur\":%.3f,\"args\":{\"busy_pct\":%.1f,\"switches_per_s\":%.0f}}",
                    (int)getpid(), (double)(v.end_ns - trace_t0) / 1000.0 - v.span_s * 1e6, v.span_s * 1e6, v.busy_pct,
                    v.switches_per_s);
    }
}
