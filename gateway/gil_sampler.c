/*
 * Which Python code holds the GIL (--gil-sample-hz, default 100): a thread of its own wakes HZ times a second, asks
 * the probe for the GIL holder's Python stack (gil_probe.c reads it without the GIL, through process_vm_readv, so
 * a frame freed under it cannot crash the server) and counts it under the route the holder works for. Without a GIL
 * (free-threaded CPython) it reads, each tick, the stack of every thread attached to Python: several may run it.
 *
 * What it keeps, under one mutex (the sampler writes; the monitor, the trace flush and the exit read):
 * - functions: a code object named "qualname (file:first line)", with its samples as the innermost frame (self)
 *   and anywhere on the stack (total), since start;
 * - stacks: each distinct (route, stack) with its count, for --gil-profile's collapsed-stack file (flamegraph.pl,
 *   speedscope): "route;outer;...;inner count";
 * - the last WINDOW_S seconds of samples, for the live view: top functions overall and per route.
 * Tables are bounded: past them a function is "[other functions]" and a stack counts as "[stacks table full]".
 */
#include "gateway.h"

#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "../server/log.h"

#define MAX_DEPTH 128
#define FUNCS 4096
#define FUNC_SLOTS (2 * FUNCS)
#define CODES 8192
#define STACKS 16384
#define STACK_SLOTS (2 * STACKS)
#define ARENA (1 << 20)
#define WINDOW_S 5
#define MAX_HZ 1000
#define RING (MAX_HZ * (WINDOW_S + 1))
#define TRACE_RING 16384
#define NO_STACK UINT32_MAX /* a sample that found no thread holding the GIL */
#define FULL_STACK (UINT32_MAX - 1)
#define TOP 12
#define MAX_RUNNING 64 /* threads read per tick without a GIL */

enum {
    F_NO_PYTHON,
    F_CHANGED,
    F_OTHER,
    F_DEEPER,
    F_FIRST
}; /* fixed function ids */

typedef struct {
    char name[288]; /* "qualname (file:line)": 119 + 150 + the rest */
    uint64_t self, total;
    uint64_t waits; /* without a GIL: samples of a thread waiting for a lock in it (innermost) */
    uint32_t mark;  /* the sample that last counted it in total (a recursive function counts once) */
} func_t;

typedef struct {
    uintptr_t code, name, file; /* the code object, and the name, file and line it had when first read */
    int line, fid;
} code_t;

typedef struct {
    uint64_t hash, count;
    uint32_t off;
    uint16_t depth;
    int16_t route;
} pstack_t;

typedef struct {
    uint64_t t;
    uint32_t stack;
    int32_t tid;
    bool tick;        /* the first of its tick: the GIL's one holder, or without a GIL the first thread read */
    uint8_t paused;   /* without a GIL: threads a stop-the-world pause held at this tick */
    int32_t wait_fid; /* without a GIL: a thread waiting for a lock, in this function (innermost); else -1 */
} sample_t;

static struct {
    uv_mutex_t lock;
    uv_thread_t thread;
    _Atomic bool on; /* set last at start, once the rest is: the monitor thread may already be reading it */
    _Atomic bool stop;
    int hz;
    char profile[PATH_MAX];
    char app_dir[PATH_MAX + 1];                 /* absolute, ending in '/' */
    uint64_t samples, held, idle, paused, mark; /* samples and idle count ticks; held, stacks (several a tick without
                                                  * a GIL) */
    uint64_t waiting;                           /* without a GIL: stacks of threads waiting for a lock */
    func_t funcs[FUNCS];
    int nfuncs;
    int32_t func_slot[FUNC_SLOTS]; /* name hash -> fid + 1 */
    code_t codes[CODES];           /* by code address */
    pstack_t stacks[STACKS];
    uint32_t nstacks, stack_slot[STACK_SLOTS]; /* hash -> index + 1 */
    uint16_t arena[ARENA];
    uint32_t arena_used;
    uint64_t full;
    sample_t ring[RING];
    uint64_t nring;
    sample_t trace[TRACE_RING];
    uint64_t trace_head, trace_tail, trace_dropped;
} sampler;

static uint64_t
mix(uint64_t h, uint64_t v)
{
    h ^= v + 0x9E3779B97F4A7C15ull + (h << 6) + (h >> 2);
    return h * 0xFF51AFD7ED558CCDull;
}

static uint64_t
hash_str(const char *s)
{
    uint64_t h = 1469598103934665603ull;

    for (; *s; s++) {
        h = (h ^ (unsigned char)*s) * 1099511628211ull;
    }
    return h;
}

/* A file as people read it: relative to the app's directory or to Python's library, else as it is. */
static const char *
short_file(const char *file)
{
    static const char *prefixes[] = { "/usr/lib/python3/dist-packages/", "/usr/local/lib/python3.11/dist-packages/",
                                      "/usr/lib/python3.11/" };
    size_t i, len = strlen(sampler.app_dir);

    if (len > 1 && strncmp(file, sampler.app_dir, len) == 0) {
        return file + len;
    }
    for (i = 0; i < sizeof(prefixes) / sizeof(prefixes[0]); i++) {
        if (strncmp(file, prefixes[i], strlen(prefixes[i])) == 0) {
            return file + strlen(prefixes[i]);
        }
    }
    return file;
}

static int
func_id(const char *name)
{
    uint64_t h = hash_str(name);
    uint32_t i = (uint32_t)h % FUNC_SLOTS;

    for (; sampler.func_slot[i] != 0; i = (i + 1) % FUNC_SLOTS) {
        if (strcmp(sampler.funcs[sampler.func_slot[i] - 1].name, name) == 0) {
            return sampler.func_slot[i] - 1;
        }
    }
    if (sampler.nfuncs == FUNCS) {
        return F_OTHER;
    }
    snprintf(sampler.funcs[sampler.nfuncs].name, sizeof(sampler.funcs[0].name), "%s", name);
    sampler.func_slot[i] = sampler.nfuncs + 1;
    return sampler.nfuncs++;
}

/* The function of a frame: from the cache when the code object at that address still has the name, file and line
 * it had (an address can be reused by another code object), else read and named anew. */
static int
frame_func(const pt_gil_frame_t *f)
{
    code_t *c = &sampler.codes[(f->code >> 4) % CODES];
    char qualname[120], file[PATH_MAX], name[sizeof(sampler.funcs[0].name)];
    size_t i;

    if (c->code == f->code && c->name == f->name && c->file == f->file && c->line == f->line) {
        return c->fid;
    }
    if (pt_gil_probe_str(f->name, qualname, sizeof(qualname)) < 0) {
        snprintf(qualname, sizeof(qualname), "?");
    }
    if (pt_gil_probe_str(f->file, file, sizeof(file)) < 0) {
        snprintf(file, sizeof(file), "?");
    }
    snprintf(name, sizeof(name), "%s (%.150s:%d)", qualname, short_file(file), f->line);
    for (i = 0; name[i]; i++) {
        name[i] = name[i] == ';' ? ',' : name[i]; /* the collapsed format's separator */
    }
    *c = (code_t){ f->code, f->name, f->file, f->line, func_id(name) };
    return c->fid;
}

/* The stack table's entry for (route, fids root first); FULL_STACK when the table is full. */
static uint32_t
stack_id(int route, const uint16_t *fids, int depth)
{
    uint64_t h = mix(0, (uint64_t)(route + 1));
    uint32_t i;
    int k;

    for (k = 0; k < depth; k++) {
        h = mix(h, fids[k]);
    }
    for (i = (uint32_t)h % STACK_SLOTS; sampler.stack_slot[i] != 0; i = (i + 1) % STACK_SLOTS) {
        pstack_t *s = &sampler.stacks[sampler.stack_slot[i] - 1];

        if (s->hash == h && s->route == route && s->depth == depth
            && memcmp(&sampler.arena[s->off], fids, (size_t)depth * sizeof(fids[0])) == 0) {
            return sampler.stack_slot[i] - 1;
        }
    }
    if (sampler.nstacks == STACKS || sampler.arena_used + (uint32_t)depth > ARENA) {
        return FULL_STACK;
    }
    memcpy(&sampler.arena[sampler.arena_used], fids, (size_t)depth * sizeof(fids[0]));
    sampler.stacks[sampler.nstacks] = (pstack_t){ h, 0, sampler.arena_used, (uint16_t)depth, (int16_t)route };
    sampler.arena_used += (uint32_t)depth;
    sampler.stack_slot[i] = sampler.nstacks + 1;
    return sampler.nstacks++;
}

static void
push(sample_t *ring, uint64_t *head, uint64_t cap, sample_t s)
{
    ring[*head % cap] = s;
    (*head)++;
}

/* Counts one stack read of thread tid (n frames, PT_STACK_CHANGED, or -1: no thread runs Python) under the route
 * it works for, into the tables and the ring. */
static void
record(unsigned long tid, const pt_gil_frame_t *frames, int n, bool tick, int paused)
{
    uint16_t fids[MAX_DEPTH + 1];
    int route = -1, k;
    sample_t s = { pt_gil_now(), NO_STACK, (int32_t)tid, tick, (uint8_t)(paused > 255 ? 255 : paused), -1 };
    bool changed = n == PT_STACK_CHANGED, deeper = n > MAX_DEPTH;

    if (changed) {
        n = 0; /* counted below as held, under its own name */
    } else if (deeper) {
        n = MAX_DEPTH; /* the frame read past MAX_DEPTH only says that there are more */
    }
    if (n >= 0) {
        pt_gil_thread_route(tid, &route);
    }
    uv_mutex_lock(&sampler.lock);
    sampler.samples += tick;
    sampler.paused += (uint64_t)paused;
    if (n < 0) {
        sampler.idle++;
    } else {
        sampler.held++;
        sampler.mark++;
        for (k = 0; k < n; k++) {
            fids[n - 1 - k] = (uint16_t)frame_func(&frames[k]);
        }
        if (n == 0) {
            fids[n++] = changed ? F_CHANGED : F_NO_PYTHON;
        } else if (deeper) {
            /* The outermost frames were not read: say so at the root, where they would be. */
            memmove(fids + 1, fids, (size_t)n * sizeof(fids[0]));
            fids[0] = F_DEEPER;
            n++;
        }
        sampler.funcs[fids[n - 1]].self++;
        for (k = 0; k < n; k++) {
            func_t *f = &sampler.funcs[fids[k]];

            if (f->mark != (uint32_t)sampler.mark) {
                f->mark = (uint32_t)sampler.mark;
                f->total++;
            }
        }
        s.stack = stack_id(route, fids, n);
        if (s.stack == FULL_STACK) {
            sampler.full++;
        } else {
            sampler.stacks[s.stack].count++;
        }
        if (pt_gil_tracing()) {
            if (sampler.trace_head - sampler.trace_tail < TRACE_RING) {
                push(sampler.trace, &sampler.trace_head, TRACE_RING, s);
            } else {
                sampler.trace_dropped++;
            }
        }
    }
    push(sampler.ring, &sampler.nring, RING, s);
    uv_mutex_unlock(&sampler.lock);
}

/* Without a GIL: a thread waiting for a lock, counted under its innermost function (the one waiting). */
static void
record_wait(unsigned long tid, const pt_gil_frame_t *frames, int n, bool tick)
{
    sample_t s = { pt_gil_now(), NO_STACK, (int32_t)tid, tick, 0, -1 };

    uv_mutex_lock(&sampler.lock);
    sampler.samples += tick;
    s.wait_fid = n > 0 ? frame_func(&frames[0]) : n == PT_STACK_CHANGED ? F_CHANGED : F_NO_PYTHON;
    sampler.funcs[s.wait_fid].waits++;
    sampler.waiting++;
    push(sampler.ring, &sampler.nring, RING, s);
    uv_mutex_unlock(&sampler.lock);
}

/* One tick: the GIL holder's stack; without a GIL (free-threaded CPython), the stack of every thread running Python
 * now, which is how the view can say how many ran at once and what each ran, and of every thread waiting for a lock
 * (gil.c knows which from the parking lot's waits), and how many a stop-the-world pause holds. */
static void
sample_once(void)
{
    pt_gil_frame_t frames[MAX_DEPTH + 1]; /* one more than kept: a stack of exactly MAX_DEPTH is whole */
    unsigned long tid = 0;
    pt_gil_thread_state_t threads[MAX_RUNNING];
    int n, i, paused = 0, read = 0;

    if (pt_gil_state(NULL) != PT_GIL_NONE) {
        n = pt_gil_probe_stack(&tid, frames, MAX_DEPTH + 1);
        record(tid, frames, n, true, 0);
        return;
    }
    n = pt_gil_probe_threads(threads, MAX_RUNNING);
    for (i = 0; i < n; i++) {
        paused += threads[i].state == PT_THREAD_SUSPENDED;
    }
    for (i = 0; i < n; i++) {
        if (threads[i].state == PT_THREAD_ATTACHED) {
            record(threads[i].tid, frames, pt_gil_probe_stack_of(threads[i].at, &tid, frames, MAX_DEPTH + 1), read == 0,
                   read == 0 ? paused : 0);
            read++;
        } else if (threads[i].state == PT_THREAD_DETACHED && pt_gil_thread_waiting(threads[i].tid)) {
            record_wait(threads[i].tid, frames, pt_gil_probe_stack_of(threads[i].at, &tid, frames, MAX_DEPTH + 1),
                        read == 0);
            read++;
        }
    }
    if (read == 0) {
        record(0, frames, -1, true, paused);
    }
}

static void
sampler_main(void *arg)
{
    uint64_t period = 1000000000ull / (uint64_t)sampler.hz, next = pt_gil_now();

    (void)arg;
    pthread_setname_np(pthread_self(), "gil-sampler");
    while (!sampler.stop) {
        struct timespec ts;
        uint64_t now;

        next += period;
        ts.tv_sec = (time_t)(next / 1000000000ull);
        ts.tv_nsec = (long)(next % 1000000000ull);
        while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL) == EINTR) {
        }
        sample_once();
        now = pt_gil_now();
        if (now > next + period) {
            next = now; /* fell behind (a stopped process, a slow sample): skip, do not burst */
        }
    }
}

/* ---- the views, under the lock ---- */

/* Per route in the window: its held samples, and (in pairs) its samples per innermost function. */
#define PAIR_SLOTS 8192
static struct {
    uint64_t self[FUNCS], total[FUNCS];
    uint32_t mark[FUNCS], mark_now;
    uint64_t route_held[PT_GIL_ROUTES_MAX + 2];
    uint64_t paused;       /* without a GIL: thread-ticks a stop-the-world pause held */
    uint64_t waits[FUNCS]; /* without a GIL: samples of threads waiting for a lock, by innermost function */
    uint64_t waiting;
    struct {
        int32_t route, fid; /* route + 1, and fid + 1 (0: empty slot) */
        uint64_t n;
    } pair[PAIR_SLOTS];
} window;

static void
window_pair(int route, int fid)
{
    uint32_t i = (uint32_t)mix((uint64_t)route, (uint64_t)fid) % PAIR_SLOTS, probes;

    for (probes = 0; probes < PAIR_SLOTS; probes++, i = (i + 1) % PAIR_SLOTS) {
        if (window.pair[i].fid == 0) {
            window.pair[i].route = route + 1;
            window.pair[i].fid = fid + 1;
        }
        if (window.pair[i].route == route + 1 && window.pair[i].fid == fid + 1) {
            window.pair[i].n++;
            return;
        }
    }
}

/* Counts the samples of the last WINDOW_S seconds into window; returns them, and the held ones in *held. */
static uint64_t
window_count(uint64_t *held)
{
    uint64_t since = pt_gil_now() - (uint64_t)WINDOW_S * 1000000000ull, n = 0, j;
    uint64_t first = sampler.nring > RING ? sampler.nring - RING : 0;

    memset(&window, 0, sizeof(window));
    *held = 0;
    for (j = first; j < sampler.nring; j++) {
        const sample_t *s = &sampler.ring[j % RING];
        const pstack_t *st;
        int k, route;

        if (s->t < since) {
            continue;
        }
        n += s->tick;
        window.paused += s->paused;
        if (s->wait_fid >= 0) {
            window.waits[s->wait_fid]++;
        }
        window.waiting += s->wait_fid >= 0;
        if (s->stack == NO_STACK || s->stack == FULL_STACK) {
            continue;
        }
        (*held)++;
        st = &sampler.stacks[s->stack];
        route = st->route < 0 || st->route > PT_GIL_ROUTES_MAX ? PT_GIL_ROUTES_MAX + 1 : st->route;
        window.route_held[route]++;
        window.self[sampler.arena[st->off + st->depth - 1u]]++;
        window_pair(st->route, sampler.arena[st->off + st->depth - 1u]);
        window.mark_now++;
        for (k = 0; k < st->depth; k++) {
            int fid = sampler.arena[st->off + (uint32_t)k];

            if (window.mark[fid] != window.mark_now) {
                window.mark[fid] = window.mark_now;
                window.total[fid]++;
            }
        }
    }
    return n;
}

/* The indexes of the n largest of a[0..len), largest first (the earlier of equals first), into out; how many. */
static int
top(const uint64_t *a, int len, int n, int *out)
{
    int i, k = 0, j;

    for (i = 0; i < len; i++) {
        if (a[i] == 0) {
            continue;
        }
        for (j = k < n ? k++ : n; j > 0 && a[out[j - 1]] < a[i]; j--) {
            if (j < n) {
                out[j] = out[j - 1];
            }
        }
        if (j < n) {
            out[j] = i;
        }
    }
    return k;
}

static void
func_rows(pt_buf_t *b, const char *key, const uint64_t *by)
{
    int ids[TOP], n = top(by, sampler.nfuncs, TOP, ids), i;

    pt_buf_printf(b, ",\"%s\":[", key);
    for (i = 0; i < n; i++) {
        pt_buf_printf(b, "%s{\"name\":", i ? "," : "");
        pt_gil_json_str(b, sampler.funcs[ids[i]].name);
        pt_buf_printf(b, ",\"self\":%llu,\"total\":%llu}", (unsigned long long)window.self[ids[i]],
                      (unsigned long long)window.total[ids[i]]);
    }
    pt_buf_append(b, "]", 1);
}

/* A route's top 3 innermost functions in the window. */
static void
route_row(pt_buf_t *b, int route, uint64_t held)
{
    static uint64_t count[PAIR_SLOTS];
    static int fid[PAIR_SLOTS];
    int i, k, len = 0, best[3], n;
    char name[100];

    for (i = 0; i < PAIR_SLOTS; i++) {
        if (window.pair[i].fid != 0 && window.pair[i].route - 1 == route) {
            count[len] = window.pair[i].n;
            fid[len++] = window.pair[i].fid - 1;
        }
    }
    n = top(count, len, 3, best);
    pt_gil_route_name(route, name, sizeof(name));
    pt_buf_printf(b, "{\"route\":");
    pt_gil_json_str(b, name);
    pt_buf_printf(b, ",\"held\":%llu,\"top\":[", (unsigned long long)held);
    for (k = 0; k < n; k++) {
        pt_buf_printf(b, "%s{\"name\":", k ? "," : "");
        pt_gil_json_str(b, sampler.funcs[fid[best[k]]].name);
        pt_buf_printf(b, ",\"self\":%llu}", (unsigned long long)count[best[k]]);
    }
    pt_buf_append(b, "]}", 2);
}

void
pt_gil_sampler_json(pt_buf_t *b)
{
    uint64_t n, held;
    const char *sep = "";
    int r;

    if (!sampler.on) {
        pt_buf_printf(b, "{\"hz\":0}");
        return;
    }
    uv_mutex_lock(&sampler.lock);
    n = window_count(&held);
    /* held: stacks read, one a tick with a GIL (its holder's), one per thread running Python without one. */
    pt_buf_printf(b, "{\"hz\":%d,\"window_s\":%d,\"samples\":%llu,\"held\":%llu,\"paused\":%llu", sampler.hz, WINDOW_S,
                  (unsigned long long)n, (unsigned long long)held, (unsigned long long)window.paused);
    func_rows(b, "by_self", window.self);
    func_rows(b, "by_total", window.total);
    pt_buf_printf(b, ",\"waiting\":%llu,\"waits\":[", (unsigned long long)window.waiting);
    {
        int ids[TOP], k, nw = top(window.waits, sampler.nfuncs, TOP, ids);

        for (k = 0; k < nw; k++) {
            pt_buf_printf(b, "%s{\"name\":", k ? "," : "");
            pt_gil_json_str(b, sampler.funcs[ids[k]].name);
            pt_buf_printf(b, ",\"samples\":%llu}", (unsigned long long)window.waits[ids[k]]);
        }
    }
    pt_buf_append(b, "]", 1);
    pt_buf_printf(b, ",\"routes\":[");
    for (r = 0; r <= PT_GIL_ROUTES_MAX + 1; r++) {
        if (window.route_held[r] > 0) {
            pt_buf_printf(b, "%s", sep);
            sep = ",";
            route_row(b, r > PT_GIL_ROUTES_MAX ? -1 : r, window.route_held[r]);
        }
    }
    pt_buf_append(b, "]}", 2);
    uv_mutex_unlock(&sampler.lock);
}

/* Without a GIL: what the sampler found each thread doing, and the functions that waited for a lock most. */
static void
no_gil_metrics(pt_buf_t *b)
{
    int ids[20], n, i;

    pt_buf_printf(b,
                  "# HELP ponte_python_thread_samples_total Threads the sampler found, tick by tick, without a GIL: "
                  "running Python (attached), waiting for a lock (parked), or paused by a stop-the-world pause.\n"
                  "# TYPE ponte_python_thread_samples_total counter\n"
                  "ponte_python_thread_samples_total{state=\"running\"} %llu\n"
                  "ponte_python_thread_samples_total{state=\"waiting\"} %llu\n"
                  "ponte_python_thread_samples_total{state=\"paused\"} %llu\n"
                  "# HELP ponte_python_lock_wait_samples_total Samples of a thread waiting for a lock, by the Python "
                  "function it waited in (innermost), the top 20 since start.\n"
                  "# TYPE ponte_python_lock_wait_samples_total counter\n",
                  (unsigned long long)sampler.held, (unsigned long long)sampler.waiting,
                  (unsigned long long)sampler.paused);
    for (i = 0; i < sampler.nfuncs; i++) {
        window.self[i] = sampler.funcs[i].waits;
    }
    n = top(window.self, sampler.nfuncs, 20, ids);
    for (i = 0; i < n; i++) {
        pt_buf_t label = { 0 };

        pt_gil_json_str(&label, sampler.funcs[ids[i]].name);
        pt_buf_printf(b, "ponte_python_lock_wait_samples_total{function=%.*s} %llu\n", (int)label.len, label.data,
                      (unsigned long long)sampler.funcs[ids[i]].waits);
        pt_buf_free(&label);
    }
}

void
pt_gil_sampler_metrics(pt_buf_t *b)
{
    int ids[20], n, i;

    if (!sampler.on) {
        return;
    }
    uv_mutex_lock(&sampler.lock);
    if (pt_gil_state(NULL) == PT_GIL_NONE) {
        no_gil_metrics(b);
    }
    pt_buf_printf(b,
                  "# HELP ponte_gil_samples_total Samples of the GIL holder's stack (--gil-sample-hz), by whether "
                  "a thread held the GIL.\n"
                  "# TYPE ponte_gil_samples_total counter\n"
                  "ponte_gil_samples_total{held=\"true\"} %llu\nponte_gil_samples_total{held=\"false\"} %llu\n"
                  "# HELP ponte_gil_function_samples_total Samples with the function innermost (kind self) or "
                  "anywhere on the holder's stack (kind total), the top 20 by self since start.\n"
                  "# TYPE ponte_gil_function_samples_total counter\n",
                  (unsigned long long)sampler.held, (unsigned long long)sampler.idle);
    for (i = 0; i < sampler.nfuncs; i++) {
        window.self[i] = sampler.funcs[i].self;
    }
    n = top(window.self, sampler.nfuncs, 20, ids);
    for (i = 0; i < n; i++) {
        pt_buf_t label = { 0 };
        const func_t *f = &sampler.funcs[ids[i]];

        pt_gil_json_str(&label, f->name);
        pt_buf_printf(b, "ponte_gil_function_samples_total{function=%.*s,kind=\"self\"} %llu\n", (int)label.len,
                      label.data, (unsigned long long)f->self);
        pt_buf_printf(b, "ponte_gil_function_samples_total{function=%.*s,kind=\"total\"} %llu\n", (int)label.len,
                      label.data, (unsigned long long)f->total);
        pt_buf_free(&label);
    }
    uv_mutex_unlock(&sampler.lock);
}

/* "route;outer;...;inner" of a stack, into b. */
static void
stack_text(pt_buf_t *b, const pstack_t *st)
{
    char route[100];
    int k;

    pt_gil_route_name(st->route, route, sizeof(route));
    for (k = 0; route[k]; k++) {
        route[k] = route[k] == ';' || route[k] == ' ' ? '_' : route[k];
    }
    pt_buf_printf(b, "%s", route);
    for (k = 0; k < st->depth; k++) {
        pt_buf_printf(b, ";%s", sampler.funcs[sampler.arena[st->off + (uint32_t)k]].name);
    }
}

static void
write_profile(void)
{
    char tmp[PATH_MAX + 8];
    FILE *f;
    uint32_t i;

    snprintf(tmp, sizeof(tmp), "%s.tmp", sampler.profile);
    if ((f = fopen(tmp, "w")) == NULL) {
        pt_log_error("--gil-profile %s: %s", sampler.profile, strerror(errno));
        return;
    }
    uv_mutex_lock(&sampler.lock);
    for (i = 0; i < sampler.nstacks; i++) {
        pt_buf_t line = { 0 };

        stack_text(&line, &sampler.stacks[i]);
        fprintf(f, "%.*s %llu\n", (int)line.len, line.data, (unsigned long long)sampler.stacks[i].count);
        pt_buf_free(&line);
    }
    if (sampler.full > 0) {
        fprintf(f, "[stacks table full] %llu\n", (unsigned long long)sampler.full);
    }
    uv_mutex_unlock(&sampler.lock);
    if (fclose(f) != 0 || rename(tmp, sampler.profile) != 0) {
        pt_log_error("--gil-profile %s: %s", sampler.profile, strerror(errno));
    }
}

void
pt_gil_sampler_trace(void (*write)(const char *fmt, ...), int pid, uint64_t t0)
{
    if (!sampler.on) {
        return;
    }
    uv_mutex_lock(&sampler.lock);
    for (; sampler.trace_tail < sampler.trace_head; sampler.trace_tail++) {
        const sample_t *s = &sampler.trace[sampler.trace_tail % TRACE_RING];
        const pstack_t *st;
        pt_buf_t name = { 0 }, stack = { 0 }, qs = { 0 };

        if (s->stack == FULL_STACK || s->t < t0) {
            continue;
        }
        st = &sampler.stacks[s->stack];
        pt_gil_json_str(&name, sampler.funcs[sampler.arena[st->off + st->depth - 1u]].name);
        stack_text(&stack, st);
        pt_buf_append(&stack, "", 1); /* a C string for pt_gil_json_str */
        pt_gil_json_str(&qs, stack.data);
        write("{\"name\":%.*s,\"cat\":\"gil-sample\",\"ph\":\"i\",\"s\":\"t\",\"pid\":%d,\"tid\":%d,\"ts\":%.3f,"
              "\"args\":{\"stack\":%.*s}}",
              (int)name.len, name.data, pid, (int)s->tid, (double)(s->t - t0) / 1000.0, (int)qs.len, qs.data);
        pt_buf_free(&name);
        pt_buf_free(&stack);
        pt_buf_free(&qs);
    }
    uv_mutex_unlock(&sampler.lock);
}

const char *
pt_gil_sampler_start(const pt_config_t *cfg)
{
    static char why[200];
    const char *path = cfg->gil_profile;

    if (cfg->gil_sample_hz <= 0 || !cfg->gil_probe) {
        return "off";
    }
    if (!cfg->gil_monitor && !path && !cfg->gil_trace) {
        return "off (nothing shows it: --gil-monitor, --gil-profile or --gil-trace)";
    }
    if (pt_gil_probe_layout(why, sizeof(why)) < 0) {
        return why;
    }
    sampler.hz = cfg->gil_sample_hz;
    if (realpath(cfg->app_dir ? cfg->app_dir : ".", sampler.app_dir) != NULL) {
        strcat(sampler.app_dir, "/");
    }
    if (path != NULL) {
        pt_gil_process_path(cfg, path, sampler.profile, sizeof(sampler.profile));
    }
    sampler.nfuncs = F_FIRST;
    strcpy(sampler.funcs[F_NO_PYTHON].name, "[no Python frame]");
    strcpy(sampler.funcs[F_CHANGED].name, "[stack changed while read]");
    strcpy(sampler.funcs[F_OTHER].name, "[other functions]");
    strcpy(sampler.funcs[F_DEEPER].name, "[more frames than the sampler reads]");
    if (uv_mutex_init(&sampler.lock) != 0 || uv_thread_create(&sampler.thread, sampler_main, NULL) != 0) {
        return "off (no thread for it)";
    }
    sampler.on = true;
    snprintf(why, sizeof(why), "%d Hz%s", sampler.hz,
             pt_gil_state(NULL) == PT_GIL_NONE ? ", every thread running Python (no GIL: no one holder)" : "");
    return why;
}

bool
pt_gil_sampler_on(void)
{
    return sampler.on;
}

void
pt_gil_sampler_stop(void)
{
    if (!sampler.on) {
        return;
    }
    sampler.stop = true;
    uv_thread_join(&sampler.thread);
    if (sampler.trace_dropped > 0) {
        pt_log_warning("--gil-trace dropped %llu GIL samples (written more slowly than taken)",
                       (unsigned long long)sampler.trace_dropped);
    }
    if (sampler.profile[0]) {
        write_profile();
    }
}
