/*
 * --gil-trace: every GIL hold and wait and each request as Chrome trace-event JSON (Perfetto, chrome://tracing).
 * Each thread appends its spans to the ring in its own record (gil_records.h), single producer; the loop drains the
 * rings into the file every 20 ms (app.c's timer), single consumer, with the sampler's samples and the report's
 * windows beside them.
 */
#include "gil_records.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "../server/log.h"

bool pt_gil_trace_on;
uint64_t pt_gil_trace_t0;
static pid_t trace_consumer; /* the thread that drains the rings (the loop thread, which opened the trace) */
static FILE *trace_file;
static bool trace_first = true, trace_first_report = true;

static void trace_write(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

void
pt_gil_trace_append(pt_gil_thread_t *t, char kind, uint64_t start, uint64_t end, const char *label)
{
    uint32_t head, tail;
    pt_trace_ev_t *e;

    if (start < pt_gil_trace_t0) {
        return;
    }
    if (kind != 'R' && pt_gil_state(NULL) == PT_GIL_NONE) {
        kind = kind == 'H' ? 'A' : 'P'; /* no GIL: a stretch attached to Python, a wait for a lock (parked) */
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
    e->ts = start - pt_gil_trace_t0;
    e->dur = end - start;
    e->kind = kind;
    if (label != NULL) {
        snprintf(e->label, sizeof(e->label), "%s", label);
    } else {
        e->label[0] = '\0';
    }
    atomic_store_explicit(&t->trace.head, head + 1, memory_order_release);
}

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
    pt_gil_trace_t0 = pt_gil_now_ns();
    trace_consumer = (pid_t)syscall(SYS_gettid);
    pt_gil_trace_on = true;
    /* ts 0 is CLOCK_MONOTONIC's monotonic_ns (also perf's clock, and Python's time.monotonic_ns()). */
    trace_write("{\"name\":\"process_name\",\"ph\":\"M\",\"pid\":%d,\"args\":{\"name\":\"ponte %d\","
                "\"monotonic_ns\":%llu}}",
                (int)getpid(), (int)getpid(), (unsigned long long)pt_gil_trace_t0);
    return 0;
}

void
pt_gil_trace_flush(void)
{
    int i, n = atomic_load_explicit(&pt_gil_nthreads, memory_order_relaxed), pid = (int)getpid();

    if (trace_file == NULL) {
        return;
    }
    for (i = 0; i < n; i++) {
        pt_gil_thread_t *t = &pt_gil_threads[i];
        uint32_t head, tail;

        if (!atomic_load_explicit(&t->used, memory_order_acquire)) {
            continue;
        }
        if (!t->trace.named) {
            char name[32], role[8];

            pt_gil_label_get(t, name, role);
            t->trace.named = true;
            trace_write("{\"name\":\"thread_name\",\"ph\":\"M\",\"pid\":%d,\"tid\":%d,\"args\":{\"name\":\"%s\"}}", pid,
                        (int)t->tid, name);
        }
        head = atomic_load_explicit(&t->trace.head, memory_order_acquire);
        tail = atomic_load_explicit(&t->trace.tail, memory_order_relaxed);
        for (; tail != head; tail++) {
            const pt_trace_ev_t *e = &t->trace.ev[tail % TRACE_RING];
            const char *name = e->kind == 'H' ? "holding the GIL"
                : e->kind == 'W'              ? "waiting for the GIL"
                : e->kind == 'A'              ? "running Python"
                : e->kind == 'P'              ? "waiting for a lock"
                                              : "request";
            const char *cat = e->kind == 'R' ? "request" : e->kind == 'A' || e->kind == 'P' ? "python" : "gil";
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
    pt_gil_sampler_trace(trace_write, pid, pt_gil_trace_t0);
    fflush(trace_file);
}

void
pt_gil_trace_close(void)
{
    int i, n = atomic_load_explicit(&pt_gil_nthreads, memory_order_relaxed);
    uint64_t dropped = 0;

    if (trace_file == NULL) {
        return;
    }
    pt_gil_trace_flush();
    pt_gil_trace_on = false;
    for (i = 0; i < n; i++) {
        dropped += atomic_load_explicit(&pt_gil_threads[i].trace.dropped, memory_order_relaxed);
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
pt_gil_trace_report_window(const pt_gil_view_t *v)
{
    if (trace_file != NULL && v->end_ns - (uint64_t)(v->span_s * 1e9) >= pt_gil_trace_t0) {
        /* The window the line covers, on a track of its own, so the log and the trace can be read together. */
        if (trace_first_report) {
            trace_first_report = false;
            trace_write("{\"name\":\"thread_name\",\"ph\":\"M\",\"pid\":%d,\"tid\":0,\"args\":{\"name\":"
                        "\"--gil-report windows\"}}",
                        (int)getpid());
        }
        trace_write("{\"name\":\"gil report\",\"cat\":\"report\",\"ph\":\"X\",\"pid\":%d,\"tid\":0,\"ts\":%.3f,"
                    "\"dur\":%.3f,\"args\":{\"busy_pct\":%.1f,\"switches_per_s\":%.0f}}",
                    (int)getpid(), (double)(v->end_ns - pt_gil_trace_t0) / 1000.0 - v->span_s * 1e6, v->span_s * 1e6,
                    v->busy_pct, v->switches_per_s);
    }
}
