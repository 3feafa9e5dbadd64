/*
 * The GIL, measured. Every GIL move of ponte's own threads goes through pt_gil_acquire/pt_gil_release; every
 * GIL transition of every thread (the interpreter's forced switches, time.sleep, I/O inside the app, threads the
 * app starts) arrives through the probe (gil_probe.c) as pt_gil_on_*.
 *
 * Each thread owns one record (gil_records.h) and is the only writer of its fields (relaxed atomics), but for its
 * forced drops, which the thread taking the GIL from it adds; readers (the report and the monitor, gil_report.c;
 * the trace, gil_trace.c) sum them without locks. The hooks run inside CPython's GIL critical sections: no locks,
 * no allocation, two clock reads at most.
 */
#include "gil_records.h"

#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

pt_gil_thread_t pt_gil_threads[MAX_THREADS];
_Atomic int pt_gil_nthreads;
/* The thread's record, read on every GIL event: initial-exec, one load instead of a call to __tls_get_addr in the
 * module python3 dlopens, for 8 of the bytes of static TLS glibc keeps spare for such modules. */
static _Thread_local pt_gil_thread_t *self __attribute__((tls_model("initial-exec")));
static _Thread_local char pending_name[32];
static _Thread_local char pending_role[8];
static _Atomic(pt_gil_thread_t *) last_taker;
/* Forced switches. A waiter whose timed wait ends with no take of the GIL since it began asks the holder to drop
 * (take_gil's SET_GIL_DROP_REQUEST, on switch_number unchanged); the next take by another thread is then a forced
 * switch, counted for the thread that had to drop. Counted at the take, not when the dropper waits on switch_cond:
 * that wait happens only when the dropper gets there before a waiter has taken the GIL, a race the waiter wins on
 * busy cores, which would leave forced switches uncounted. */
static _Atomic uint64_t takes;
static _Atomic bool drop_requested;
_Atomic uint64_t pt_gil_handoffs;
_Atomic int pt_gil_waiters;
bool pt_gil_exact;
static bool measuring = true; /* --gil-probe off: nothing at all (to measure what measuring costs) */
_Atomic uint64_t pt_gil_loop_busy_ns;
_Atomic int pt_gil_loops = 1;
_Atomic uint64_t pt_gil_loop_lag_max_ns;

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
    int i = atomic_fetch_add_explicit(&pt_gil_nthreads, 1, memory_order_relaxed);

    if (i >= MAX_THREADS) {
        atomic_fetch_sub_explicit(&pt_gil_nthreads, 1, memory_order_relaxed);
        return NULL; /* beyond what we track: the thread goes uncounted */
    }
    char name[32] = "", role[8] = "";

    self = &pt_gil_threads[i];
    self->index = i;
    self->tid = (pid_t)syscall(SYS_gettid);
    if (pthread_getcpuclockid(pthread_self(), &self->cpu_clock) != 0) {
        self->cpu_clock = (clockid_t)-1;
    }
    snprintf(role, sizeof(role), "%s", pending_role[0] ? pending_role : "app");
    if (pending_name[0]) {
        memcpy(name, pending_name, sizeof(name));
    } else if (pthread_getname_np(pthread_self(), name, sizeof(name)) != 0 || !name[0]) {
        snprintf(name, sizeof(name), "thread-%d", (int)self->tid);
    }
    pt_gil_label_set(self, name, role);
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
        pt_gil_label_set(self, pending_name, pending_role);
    }
}
/* ---- transitions (from the probe, or from pt_gil_acquire/release when the probe is blind) ---- */

void
pt_gil_on_wait(void)
{
    pt_gil_thread_t *t = me();

    if (t != NULL) {
        atomic_store_explicit(&t->takes_at_wait, atomic_load_explicit(&takes, memory_order_relaxed),
                              memory_order_relaxed);
    }
    if (t != NULL && atomic_load_explicit(&t->waiting_since, memory_order_relaxed) == 0) {
        atomic_store_explicit(&t->waiting_since, pt_gil_now_ns(), memory_order_relaxed);
        atomic_fetch_add_explicit(&pt_gil_waiters, 1, memory_order_relaxed);
    }
}

void
pt_gil_on_wait_timeout(void)
{
    pt_gil_thread_t *t = me();

    if (t != NULL) {
        atomic_fetch_add_explicit(&t->timeouts, 1, memory_order_relaxed);
        if (atomic_load_explicit(&takes, memory_order_relaxed)
            == atomic_load_explicit(&t->takes_at_wait, memory_order_relaxed)) {
            atomic_store_explicit(&drop_requested, true, memory_order_relaxed);
        }
    }
}

/* The thread's wait, if one is in progress, ends now. */
static void
end_wait(pt_gil_thread_t *t, uint64_t now)
{
    uint64_t since = atomic_load_explicit(&t->waiting_since, memory_order_relaxed);

    if (since != 0) {
        pt_gil_write_begin(t);
        atomic_store_explicit(&t->waiting_since, 0, memory_order_relaxed);
        atomic_fetch_add_explicit(&t->wait_ns, now - since, memory_order_relaxed);
        pt_gil_write_end(t);
        atomic_fetch_add_explicit(&t->wait_hist[bucket(now - since)], 1, memory_order_relaxed);
        atomic_fetch_sub_explicit(&pt_gil_waiters, 1, memory_order_relaxed);
        pt_gil_trace_push(t, 'W', since, now, NULL);
    }
}

/* Without a GIL, a wait is a lock's (gil_cond.c's semaphores): counted where the GIL's would be, for the threads
 * that run Python (ponte's, which have their records, and those threading started, which named theirs); libuv's
 * and other C threads park too, and are not the app's. */
static _Thread_local bool parked_in_hold; /* a park detached this thread in the middle of a hold ponte timed */

void
pt_gil_on_parked(void)
{
    pt_gil_thread_t *t;

    if (self == NULL && !pending_name[0]) {
        return;
    }
    t = me();
    if (t != NULL && atomic_load_explicit(&t->holding_since, memory_order_relaxed) != 0) {
        pt_gil_on_dropped(); /* parked, the thread is detached: its time attached pauses */
        parked_in_hold = true;
    }
    pt_gil_on_wait();
}

void
pt_gil_on_unparked(void)
{
    uint64_t now;

    if (self == NULL) {
        return;
    }
    now = pt_gil_now_ns();
    end_wait(self, now);
    if (parked_in_hold) {
        parked_in_hold = false;
        atomic_store_explicit(&self->holding_since, now, memory_order_relaxed);
    }
}

void
pt_gil_on_taken(void)
{
    pt_gil_thread_t *t = me(), *prev;
    uint64_t now;
    bool forced;

    if (t == NULL) {
        return;
    }
    now = pt_gil_now_ns();
    end_wait(t, now);
    atomic_store_explicit(&t->holding_since, now, memory_order_relaxed);
    atomic_fetch_add_explicit(&t->acquisitions, 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&takes, 1, memory_order_relaxed);
    /* acquire-release: prev's index, written when it enrolled, is read below (without a GIL, by another thread) */
    prev = atomic_exchange_explicit(&last_taker, t, memory_order_acq_rel);
    forced = atomic_exchange_explicit(&drop_requested, false, memory_order_relaxed);
    if (prev != NULL && prev != t) {
        atomic_fetch_add_explicit(&pt_gil_handoffs, 1, memory_order_relaxed);
        if (prev->index < PAIRS) {
            atomic_fetch_add_explicit(&t->from[prev->index], 1, memory_order_relaxed);
        }
        if (forced) {
            atomic_fetch_add_explicit(&prev->forced, 1, memory_order_relaxed);
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
    since = atomic_load_explicit(&t->holding_since, memory_order_relaxed);
    if (since != 0) {
        uint64_t now = pt_gil_now_ns();

        pt_gil_write_begin(t);
        atomic_store_explicit(&t->holding_since, 0, memory_order_relaxed);
        atomic_fetch_add_explicit(&t->hold_ns, now - since, memory_order_relaxed);
        pt_gil_write_end(t);
        atomic_fetch_add_explicit(&t->hold_hist[bucket(now - since)], 1, memory_order_relaxed);
        pt_gil_trace_push(t, 'H', since, now, NULL);
    }
}

void
pt_gil_set_loops(int n)
{
    atomic_store_explicit(&pt_gil_loops, n, memory_order_relaxed);
}

void
pt_gil_loop_busy(uint64_t ns)
{
    uint64_t max = atomic_load_explicit(&pt_gil_loop_lag_max_ns, memory_order_relaxed);

    atomic_fetch_add_explicit(&pt_gil_loop_busy_ns, ns, memory_order_relaxed);
    while (ns > max
           && !atomic_compare_exchange_weak_explicit(&pt_gil_loop_lag_max_ns, &max, ns, memory_order_relaxed,
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
    uint64_t since, now = pt_gil_now_ns();

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
    int i, n = atomic_load_explicit(&pt_gil_nthreads, memory_order_acquire);

    for (i = 0; i < n; i++) {
        if (atomic_load_explicit(&pt_gil_threads[i].used, memory_order_acquire)
            && (unsigned long)pt_gil_threads[i].tid == tid) {
            *route = atomic_load_explicit(&pt_gil_threads[i].route1, memory_order_relaxed) - 1;
            return i;
        }
    }
    *route = -1;
    return -1;
}

bool
pt_gil_thread_waiting(unsigned long tid)
{
    int route, i = pt_gil_thread_route(tid, &route);

    return i >= 0 && atomic_load_explicit(&pt_gil_threads[i].waiting_since, memory_order_relaxed) != 0;
}

bool
pt_gil_tracing(void)
{
    return pt_gil_trace_on;
}

uint64_t
pt_gil_now(void)
{
    return pt_gil_now_ns();
}

void
pt_gil_trace_request(uint64_t start_ns, const char *label)
{
    pt_gil_thread_t *t = me();

    if (t != NULL && pt_gil_trace_on) {
        pt_gil_trace_push(t, 'R', start_ns, pt_gil_now_ns(), label);
    }
}

/* A holder that was asked to drop waits until another thread has the GIL: a drop request is pending (also when
 * its asker's timeout was not seen, a thread of no record's). The take counts the switch. */
void
pt_gil_on_forced(void)
{
    atomic_store_explicit(&drop_requested, true, memory_order_relaxed);
}

/* ---- ponte's own moves ---- */

void
pt_gil_acquire(PyThreadState *ts)
{
    bool timed = !pt_gil_exact && measuring;

    /* Without a GIL, attaching waits only for a stop-the-world pause, which parks the thread: the park counts it. */
    if (timed && pt_gil_state(NULL) != PT_GIL_NONE) {
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
    if (!pt_gil_exact && measuring) {
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
    if (pt_gil_state(NULL) == PT_GIL_NONE) {
        /* Free-threaded, the GIL off: its condition variables never move. What ponte's own threads spend attached
         * (running Python) and waiting to attach (for a stop-the-world pause) is timed at its own calls instead. */
        pt_gil_exact = false;
        if (pt_gil_probe_parks(true) < 0) {
            return "no GIL to probe (free-threaded CPython): timing ponte's own threads' time attached to Python; "
                   "lock waits unseen (glibc's sem_* not found)";
        }
        return "no GIL to probe (free-threaded CPython): timing ponte's own threads' time attached to Python, and "
               "every thread's waits for a lock";
    }
    if (pt_gil_probe_start(why, sizeof(why)) < 0) {
        static char msg[256];

        pt_gil_exact = false;
        snprintf(msg, sizeof(msg), "timing ponte's own acquire/release only (%s)", why);
        return msg;
    }
    /* We hold the GIL now: that is the state the probe starts in, a hold like any other (one acquisition, one
     * span in the trace), taken before the probe could see it. */
    t = me();
    if (t != NULL) {
        atomic_store_explicit(&t->holding_since, pt_gil_now_ns(), memory_order_relaxed);
        atomic_fetch_add_explicit(&t->acquisitions, 1, memory_order_relaxed);
        atomic_store_explicit(&last_taker, t, memory_order_relaxed);
    }
    before = t ? atomic_load_explicit(&t->acquisitions, memory_order_relaxed) : 0;
    pt_gil_exact = true;
    ts = PyEval_SaveThread();
    PyEval_RestoreThread(ts);
    if (t == NULL || atomic_load_explicit(&t->acquisitions, memory_order_relaxed) == before) {
        pt_gil_probe_stop();
        pt_gil_exact = false;
        return "timing ponte's own acquire/release only (the probe saw no GIL transition)";
    }
    return "exact (every acquire and release of the main interpreter's GIL, all threads)";
}
