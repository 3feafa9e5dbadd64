/*
 * The GIL's per-thread records, which gil.c keeps and only their own thread writes (relaxed atomics; `forced` is
 * added to by the next taker), for the files that read them: gil_trace.c (each thread's ring of spans, and the
 * trace file) and gil_report.c (the views and the report). Internal to gateway/gil*.c.
 */
#ifndef PT_GIL_RECORDS_H
#define PT_GIL_RECORDS_H

#include "gateway.h"

#include <stdatomic.h>
#include <string.h>
#include <sys/types.h>
#include <time.h>

#define MAX_THREADS PT_GIL_MAX_THREADS

/* --gil-trace: each thread appends its spans to its own ring (single producer); the loop drains them (single
 * consumer) to the file (gil_trace.c). A full ring drops spans and counts them, never blocks. */
#define TRACE_RING 8192

typedef struct {
    uint64_t ts, dur; /* ns since the trace started */
    char kind;        /* 'H' held, 'W' waited, 'R' request; without a GIL, 'A' attached, 'P' parked on a lock */
    char label[47];
} pt_trace_ev_t;

typedef struct {
    pt_trace_ev_t *ev;
    _Atomic uint32_t head, tail;
    _Atomic uint64_t dropped;
    bool named; /* the thread_name metadata event was written */
} pt_trace_ring_t;

#define PAIRS PT_GIL_PAIR_THREADS
#define PT_GIL_LABEL_WORDS 5 /* name[32], role[8] */
#define BUCKETS PT_GIL_HIST_BUCKETS

typedef struct {
    _Atomic int used;
    pid_t tid;
    int index;
    clockid_t cpu_clock; /* its CPU time, which another thread may read (pthread_getcpuclockid) */
    /* Its name (32 bytes) and role (8), which its own thread may change while others read them (a Python thread
     * named after it started): words written and read atomically, under `seq` (pt_gil_label_set/_get). */
    _Atomic uint64_t label[PT_GIL_LABEL_WORDS];
    _Atomic uint64_t hold_ns, wait_ns; /* completed holds and waits */
    _Atomic uint64_t holding_since;    /* 0 when not holding */
    _Atomic uint64_t waiting_since;    /* 0 when not waiting */
    /* Odd while the thread moves a finished hold or wait from *_since into *_ns: a reader on another thread retries
     * (gil_report.c), or it could read the hold as neither in progress nor done (a seqlock; one writer). */
    _Atomic uint32_t seq;
    _Atomic uint64_t acquisitions, timeouts;
    _Atomic uint64_t forced;        /* drops it was made to make: counted by the thread that took the GIL next */
    _Atomic uint64_t takes_at_wait; /* gil.c's count of takes when its current timed wait for the GIL began */
    _Atomic uint64_t from[PAIRS];   /* hand-offs to this thread, by the index of the thread that had it */
    _Atomic uint64_t hold_hist[BUCKETS], wait_hist[BUCKETS]; /* durations, by power of two (see bucket()) */
    _Atomic int route1; /* the route this thread's Python works for, plus one (0: none), for the sampler */
    pt_trace_ring_t trace;
} pt_gil_thread_t;

/* Shared by the gil*.c files only: hidden, so that the module python3 loads reads them as directly as statics (the
 * probe's events read pt_gil_trace_on), not through the GOT. */
#define PT_GIL_SHARED extern __attribute__((visibility("hidden")))

PT_GIL_SHARED pt_gil_thread_t pt_gil_threads[MAX_THREADS];
PT_GIL_SHARED _Atomic int pt_gil_nthreads;          /* records handed out */
PT_GIL_SHARED _Atomic uint64_t pt_gil_handoffs;     /* the GIL went to another thread */
PT_GIL_SHARED _Atomic int pt_gil_waiters;           /* threads waiting for it now */
PT_GIL_SHARED bool pt_gil_exact;                    /* the probe sees every transition; else ponte's own moves only */
PT_GIL_SHARED _Atomic uint64_t pt_gil_loop_busy_ns; /* ASGI: time the loop spent in Python callbacks between selects */
PT_GIL_SHARED _Atomic int pt_gil_loops;             /* ASGI: the loops adding to it (--loops) */
PT_GIL_SHARED _Atomic uint64_t pt_gil_loop_lag_max_ns; /* the longest such stretch since the monitor last looked */

/* Around the owner thread's update of a *_since and its *_ns. */
static inline void
pt_gil_write_begin(pt_gil_thread_t *t)
{
    atomic_store_explicit(&t->seq, atomic_load_explicit(&t->seq, memory_order_relaxed) + 1, memory_order_relaxed);
    atomic_thread_fence(memory_order_release);
}

static inline void
pt_gil_write_end(pt_gil_thread_t *t)
{
    atomic_store_explicit(&t->seq, atomic_load_explicit(&t->seq, memory_order_relaxed) + 1, memory_order_release);
}

/* The owner thread's new name and role (NUL-terminated within 32 and 8 bytes). */
static inline void
pt_gil_label_set(pt_gil_thread_t *t, const char name[32], const char role[8])
{
    uint64_t w[PT_GIL_LABEL_WORDS];

    memcpy(w, name, 32);
    memcpy(&w[4], role, 8);
    pt_gil_write_begin(t);
    for (int i = 0; i < PT_GIL_LABEL_WORDS; i++) {
        atomic_store_explicit(&t->label[i], w[i], memory_order_relaxed);
    }
    pt_gil_write_end(t);
}

/* Another thread's read of them: a whole name, never half of a rename. */
static inline void
pt_gil_label_get(pt_gil_thread_t *t, char name[32], char role[8])
{
    uint64_t w[PT_GIL_LABEL_WORDS];
    uint32_t seq;

    do {
        seq = atomic_load_explicit(&t->seq, memory_order_acquire);
        for (int i = 0; i < PT_GIL_LABEL_WORDS; i++) {
            w[i] = atomic_load_explicit(&t->label[i], memory_order_relaxed);
        }
        atomic_thread_fence(memory_order_acquire);
    } while ((seq & 1) != 0 || atomic_load_explicit(&t->seq, memory_order_relaxed) != seq);
    memcpy(name, w, 32);
    memcpy(role, &w[4], 8);
    name[31] = role[7] = '\0';
}

static inline uint64_t
pt_gil_now_ns(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* ---- gil_trace.c ---- */
PT_GIL_SHARED bool pt_gil_trace_on;     /* --gil-trace is writing */
PT_GIL_SHARED uint64_t pt_gil_trace_t0; /* when it started: the file's ts 0 */
/* Appends a span ('H' held, 'W' waited, 'R' request) to t's ring; t's own thread only. */
void pt_gil_trace_append(pt_gil_thread_t *t, char kind, uint64_t start, uint64_t end, const char *label);
/* The same when --gil-trace is on; off, it costs the probe's events one test. */
static inline void
pt_gil_trace_push(pt_gil_thread_t *t, char kind, uint64_t start, uint64_t end, const char *label)
{
    if (__builtin_expect(pt_gil_trace_on, 0)) {
        pt_gil_trace_append(t, kind, start, end, label);
    }
}
/* The window a --gil-report line covers, as a span on a track of its own (the loop thread). */
void pt_gil_trace_report_window(const pt_gil_view_t *v);

#endif
