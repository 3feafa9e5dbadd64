/*
 * --gil-monitor HOST:PORT: the GIL, live, on its own address, served in C by a side server (its own thread and
 * libuv loop), so it keeps answering while the GIL is saturated or the app's loop is blocked. It never takes the
 * GIL: everything it shows comes from gil.c's lock-free statistics.
 *
 *   GET  /            a self-contained page: one lane per thread, scrolling (gil_monitor.html, compiled in)
 *   GET  /events      Server-Sent Events: a JSON snapshot every 100 ms
 *   GET  /snapshot    the latest snapshot
 *   GET  /metrics     Prometheus text format
 *   POST /interval?us=N   the switch interval (sys.setswitchinterval), live
 *
 * Under --processes the master serves the page (server/master_monitor.c) and each worker's monitor listens on an
 * ephemeral port, which the worker reports to the master.
 */
#include "gateway.h"

#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../server/listen.h"
#include "../server/log.h"
#include "../server/loopback_load.h"
#include "../server/side_server.h"
#include "gil_monitor_html.h"

#define TICK_MS 100
#define MAX_SUBSCRIBERS 64

static struct {
    pt_side_server_t side;
    int worker_slot;
    char python[32]; /* the running CPython's version, "3.14.2": the page says whose GIL it shows */
    const pt_config_t *cfg;
    uv_timer_t tick;
    pt_gil_sampler_t sampler;
    pt_gil_view_t view; /* the latest snapshot: what /metrics and /events show */
    pt_request_t *subscribers[MAX_SUBSCRIBERS];
    int nsubscribers;
    pt_buf_t json;
    pt_buf_t event; /* the SSE frame: "data: <json>\n\n" */
} monitor;

void
pt_gil_json_str(pt_buf_t *b, const char *s)
{
    pt_buf_append(b, "\"", 1);
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;

        if (c == '"' || c == '\\') {
            pt_buf_printf(b, "\\%c", c);
        } else if (c < 0x20) {
            pt_buf_printf(b, "\\u%04x", c);
        } else {
            pt_buf_append(b, s, 1);
        }
    }
    pt_buf_append(b, "\"", 1);
}

static void
json_counts(pt_buf_t *b, const uint64_t *c, int n)
{
    int k;

    for (k = 0; k < n; k++) {
        pt_buf_printf(b, "%s%llu", k ? "," : "[", (unsigned long long)c[k]);
    }
    pt_buf_append(b, "]", 1);
}

static void
build_json(void)
{
    const pt_gil_view_t *v = &monitor.view;
    char interval[24] = "null"; /* unknown where the probe does not know the GIL (its fallback) */
    int i, k;

    if (v->interval_us != 0) {
        snprintf(interval, sizeof(interval), "%lu", v->interval_us);
    }
    monitor.json.len = 0;
    pt_buf_printf(&monitor.json,
                  "{\"pid\":%d,\"worker\":%d,\"python\":\"%s\",\"gil\":\"%s\",\"gil_why\":", (int)getpid(),
                  monitor.worker_slot, monitor.python,
                  v->gil == PT_GIL_NONE       ? "none"
                      : v->gil == PT_GIL_BACK ? "back on"
                                              : "gil");
    pt_gil_json_str(&monitor.json, v->gil_why != NULL ? v->gil_why : "");
    pt_buf_append(&monitor.json, ",", 1);
    pt_buf_printf(
        &monitor.json,
        "\"exact\":%s,\"busy\":%.2f,\"cpu\":%.2f,\"waiting\":%d,\"switches_per_s\":%.1f,"
        "\"forced_per_s\":%.1f,\"interval_us\":%s,\"span_s\":%.4f,\"loop_busy\":%.2f,\"loops\":%d,\"loop_lag_ms\":%.1f,"
        "\"handoffs_total\":%llu,\"threads\":[",
        v->exact ? "true" : "false", v->busy_pct, v->cpu_pct, v->waiters, v->switches_per_s, v->forced_per_s, interval,
        v->span_s, v->loop_busy_pct, v->loops, v->loop_lag_max_ms, (unsigned long long)v->handoffs_total);
    for (i = 0; i < v->nthreads; i++) {
        const pt_gil_thread_view_t *t = &v->threads[i];

        pt_buf_printf(&monitor.json, "%s{\"name\":", i ? "," : "");
        pt_gil_json_str(&monitor.json, t->name);
        pt_buf_printf(&monitor.json,
                      ",\"role\":\"%s\",\"tid\":%d,\"state\":\"%c\",\"hold\":%.2f,\"wait\":%.2f,\"cpu\":%.2f,"
                      "\"acquisitions\":%llu,\"forced\":%llu,\"hold_hist\":",
                      t->role, t->tid, t->state, t->hold_pct, t->wait_pct, t->cpu_pct, (unsigned long long)t->total.acq,
                      (unsigned long long)t->total.forced);
        json_counts(&monitor.json, t->hold_hist, PT_GIL_HIST_BUCKETS);
        pt_buf_printf(&monitor.json, ",\"wait_hist\":");
        json_counts(&monitor.json, t->wait_hist, PT_GIL_HIST_BUCKETS);
        pt_buf_append(&monitor.json, "}", 1);
    }
    /* Cumulative hand-offs per pair of threads, [from, to, count] with indexes into "threads". */
    pt_buf_printf(&monitor.json, "],\"handoffs\":[");
    for (i = 0; i < v->npairs; i++) {
        pt_buf_printf(&monitor.json, "%s[%d,%d,%llu]", i ? "," : "", v->pairs[i].from, v->pairs[i].to,
                      (unsigned long long)v->pairs[i].count);
    }
    pt_buf_printf(&monitor.json, "],\"bucket_le_us\":[");
    for (k = 0; k < PT_GIL_HIST_BUCKETS - 1; k++) {
        pt_buf_printf(&monitor.json, "%s%.3f", k ? "," : "", pt_gil_bucket_le_s(k) * 1e6);
    }
    pt_buf_append(&monitor.json, "],\"routes\":", 11);
    pt_gil_routes_json(&monitor.json);
    pt_buf_append(&monitor.json, ",\"sampler\":", 11);
    pt_gil_sampler_json(&monitor.json);
    pt_buf_printf(&monitor.json,
                  ",\"load_buttons\":%s,\"load_shared\":%s,\"load\":", monitor.cfg->gil_load_io[0] ? "true" : "false",
                  monitor.cfg->gil_load_shared[0] ? "true" : "false");
    pt_load_json(&monitor.json, uv_now(&monitor.side.loop));
    pt_buf_append(&monitor.json, "}", 1);
}

/* Thread names as Prometheus label values (a Python thread may be called anything). */
static char L[PT_GIL_MAX_THREADS][2 * 32 + 1];

static void
escape_labels(void)
{
    int i;

    for (i = 0; i < monitor.view.nthreads; i++) {
        const char *s = monitor.view.threads[i].name;
        size_t k = 0;

        for (; *s && k < sizeof(L[i]) - 2; s++) {
            if (*s == '"' || *s == '\\' || *s == '\n') {
                L[i][k++] = '\\';
            }
            L[i][k++] = *s == '\n' ? 'n' : *s;
        }
        L[i][k] = '\0';
    }
}

/* A Prometheus histogram per thread. The sum is the thread's total, which includes a hold or wait in progress. */
static void
histogram(pt_buf_t *b, const char *name, const char *help, int hold)
{
    const pt_gil_view_t *v = &monitor.view;
    int i, k;

    pt_buf_printf(b, "# HELP %s %s\n# TYPE %s histogram\n", name, help, name);
    for (i = 0; i < v->nthreads; i++) {
        const pt_gil_thread_view_t *t = &v->threads[i];
        const uint64_t *c = hold ? t->hold_hist : t->wait_hist;
        uint64_t cum = 0;

        for (k = 0; k < PT_GIL_HIST_BUCKETS; k++) {
            cum += c[k];
            if (k < PT_GIL_HIST_BUCKETS - 1) {
                pt_buf_printf(b, "%s_bucket{thread=\"%s\",le=\"%g\"} %llu\n", name, L[i], pt_gil_bucket_le_s(k),
                              (unsigned long long)cum);
            } else {
                pt_buf_printf(b, "%s_bucket{thread=\"%s\",le=\"+Inf\"} %llu\n", name, L[i], (unsigned long long)cum);
            }
        }
        pt_buf_printf(b, "%s_sum{thread=\"%s\"} %.6f\n%s_count{thread=\"%s\"} %llu\n", name, L[i],
                      (double)(hold ? t->total.hold : t->total.wait) / 1e9, name, L[i], (unsigned long long)cum);
    }
}

/* A counter per thread: one of its totals, in seconds, or a count. */
static void
per_thread(pt_buf_t *b, const char *name, const char *help, size_t field, bool seconds)
{
    const pt_gil_view_t *v = &monitor.view;

    pt_buf_printf(b, "# HELP %s %s\n# TYPE %s counter\n", name, help, name);
    for (int i = 0; i < v->nthreads; i++) {
        uint64_t x = *(const uint64_t *)((const char *)&v->threads[i].total + field);

        if (seconds) {
            pt_buf_printf(b, "%s{thread=\"%s\"} %.6f\n", name, L[i], (double)x / 1e9);
        } else {
            pt_buf_printf(b, "%s{thread=\"%s\"} %llu\n", name, L[i], (unsigned long long)x);
        }
    }
}

/* With a GIL: who held it and waited for it, how it moved. */
static void
gil_metrics(pt_buf_t *b)
{
    const pt_gil_view_t *v = &monitor.view;
    char interval[24] = "NaN"; /* unknown where the probe does not know the GIL (its fallback) */

    if (v->interval_us != 0) {
        snprintf(interval, sizeof(interval), "%.6f", (double)v->interval_us / 1e6);
    }
    pt_buf_printf(b,
                  "# HELP ponte_gil_busy_ratio Share of the last interval the GIL was held.\n"
                  "# TYPE ponte_gil_busy_ratio gauge\nponte_gil_busy_ratio %.4f\n"
                  "# HELP ponte_gil_waiters Threads waiting for the GIL.\n"
                  "# TYPE ponte_gil_waiters gauge\nponte_gil_waiters %d\n"
                  "# HELP ponte_gil_switch_interval_seconds The interpreter's switch interval.\n"
                  "# TYPE ponte_gil_switch_interval_seconds gauge\nponte_gil_switch_interval_seconds %s\n"
                  "# HELP ponte_gil_handoffs_total Times the GIL passed to another thread.\n"
                  "# TYPE ponte_gil_handoffs_total counter\nponte_gil_handoffs_total %llu\n",
                  v->busy_pct / 100.0, v->waiters, interval, (unsigned long long)v->handoffs_total);
    per_thread(b, "ponte_gil_hold_seconds_total", "Time each thread held the GIL.", offsetof(pt_gil_snap_t, hold),
               true);
    per_thread(b, "ponte_gil_wait_seconds_total", "Time each thread waited for the GIL.", offsetof(pt_gil_snap_t, wait),
               true);
    per_thread(b, "ponte_gil_acquisitions_total", "Times each thread took the GIL.", offsetof(pt_gil_snap_t, acq),
               false);
    per_thread(b, "ponte_gil_forced_switches_total", "Times each thread was made to drop the GIL.",
               offsetof(pt_gil_snap_t, forced), false);
    histogram(b, "ponte_gil_hold_duration_seconds", "How long each hold of the GIL lasted.", 1);
    histogram(b, "ponte_gil_wait_duration_seconds", "How long each wait for the GIL lasted.", 0);
    pt_buf_printf(b,
                  "# HELP ponte_gil_handoffs_between_total Times the GIL passed from one thread to another.\n"
                  "# TYPE ponte_gil_handoffs_between_total counter\n");
    for (int i = 0; i < v->npairs; i++) {
        pt_buf_printf(b, "ponte_gil_handoffs_between_total{from=\"%s\",to=\"%s\"} %llu\n", L[v->pairs[i].from],
                      L[v->pairs[i].to], (unsigned long long)v->pairs[i].count);
    }
}

/* Without a GIL (free-threaded, while it stays off): time attached to Python, and waits for a lock. Attached is
 * timed for ponte's own threads (the app's threads attach without passing through ponte); waits for every thread
 * ponte has a record of. */
static void
no_gil_metrics(pt_buf_t *b)
{
    pt_buf_printf(b,
                  "# HELP ponte_python_lock_waiters Threads waiting for a lock now (parked).\n"
                  "# TYPE ponte_python_lock_waiters gauge\nponte_python_lock_waiters %d\n",
                  monitor.view.waiters);
    per_thread(b, "ponte_python_attached_seconds_total", "Time each of ponte's threads ran Python (attached).",
               offsetof(pt_gil_snap_t, hold), true);
    per_thread(b, "ponte_python_lock_wait_seconds_total", "Time each thread waited for a lock (parked).",
               offsetof(pt_gil_snap_t, wait), true);
    histogram(b, "ponte_python_attached_duration_seconds", "How long each stretch attached to Python lasted.", 1);
    histogram(b, "ponte_python_lock_wait_duration_seconds", "How long each wait for a lock lasted.", 0);
}

static void
metrics(pt_request_t *req)
{
    const pt_gil_view_t *v = &monitor.view;
    pt_buf_t b = { 0 };

    escape_labels();
    pt_buf_printf(
        &b,
        "# HELP ponte_gil_enabled 1 when there is a GIL: always on a GIL build; on a free-threaded one, once it is "
        "back.\n"
        "# TYPE ponte_gil_enabled gauge\nponte_gil_enabled %d\n"
        "# HELP ponte_gil_probe_exact 1 when every GIL transition is observed.\n"
        "# TYPE ponte_gil_probe_exact gauge\nponte_gil_probe_exact %d\n"
        "# HELP ponte_python_running_threads Threads running Python at once, on average over the last interval "
        "(at most 1 with a GIL).\n"
        "# TYPE ponte_python_running_threads gauge\nponte_python_running_threads %.4f\n"
        "# HELP ponte_asgi_loop_busy_seconds_total Time the asyncio loop ran Python between selects (every loop's, "
        "with "
        "--loops).\n"
        "# TYPE ponte_asgi_loop_busy_seconds_total counter\nponte_asgi_loop_busy_seconds_total %.6f\n"
        "# HELP ponte_asgi_loop_lag_max_seconds The longest stretch without returning to the loop, last 100 ms.\n"
        "# TYPE ponte_asgi_loop_lag_max_seconds gauge\nponte_asgi_loop_lag_max_seconds %.6f\n",
        v->gil != PT_GIL_NONE, v->exact ? 1 : 0, v->busy_pct / 100.0, (double)v->loop_busy_total_ns / 1e9,
        v->loop_lag_max_ms / 1e3);
    if (v->gil == PT_GIL_NONE) {
        no_gil_metrics(&b);
    } else {
        gil_metrics(&b);
    }
    per_thread(&b, "ponte_thread_cpu_seconds_total", "CPU time of each thread ponte has a record of.",
               offsetof(pt_gil_snap_t, cpu), true);
    pt_gil_routes_metrics(&b);
    pt_gil_sampler_metrics(&b);
    pt_side_server_respond(req, "200 OK", "text/plain; version=0.0.4", b.data, b.len);
    pt_buf_free(&b);
}

static void
drop_subscriber(int i)
{
    pt_request_t *req = monitor.subscribers[i];
    pt_buf_t out = { 0 };

    monitor.subscribers[i] = monitor.subscribers[--monitor.nsubscribers];
    pt_req_send(req, &out, PT_SEND_ABORT | PT_SEND_DONE);
}

static void
on_tick(uv_timer_t *t)
{
    int i;

    if (pt_gil_sample(&monitor.sampler, &monitor.view) < 0) {
        return;
    }
    build_json();
    monitor.event.len = 0;
    pt_buf_append(&monitor.event, "data: ", 6);
    pt_buf_append(&monitor.event, monitor.json.data, monitor.json.len);
    pt_buf_append(&monitor.event, "\n\n", 2);
    for (i = monitor.nsubscribers - 1; i >= 0; i--) {
        pt_request_t *req = monitor.subscribers[i];
        pt_buf_t out = { 0 };

        if (pt_req_must_wait(req)) {
            continue; /* a slow viewer skips frames instead of buffering them */
        }
        pt_resp_body(&req->resp, &out, monitor.event.data, monitor.event.len); /* one event, one chunk */
        if (pt_req_send(req, &out, 0) < 0) {
            pt_buf_free(&out);
            drop_subscriber(i);
            continue;
        }
        pt_buf_free(&out);
    }
}

static void
subscribe(pt_request_t *req)
{
    pt_buf_t out = { 0 };
    pt_resp_ctx_t ctx = { req->http_minor, false, req->keep_alive, false };
    pt_header_t h[] = {
        { PT_SPAN("Content-Type"), PT_SPAN("text/event-stream") },
        { PT_SPAN("Cache-Control"), PT_SPAN("no-store") },
        { PT_SPAN("Access-Control-Allow-Origin"), PT_SPAN("*") },
    };

    if (monitor.nsubscribers == MAX_SUBSCRIBERS) {
        pt_side_server_respond(req, "503 Service Unavailable", "text/plain", "too many viewers\n", 17);
        return;
    }
    pt_resp_head(&req->resp, &ctx, &out, PT_SPAN("200 OK"), h, 3, -1);
    pt_resp_body(&req->resp, &out, "retry: 1000\n\n", 13);
    pt_req_send(req, &out, 0);
    pt_buf_free(&out);
    monitor.subscribers[monitor.nsubscribers++] = req;
}

static void
set_interval(pt_request_t *req)
{
    const char *q = req->query.base;
    char buf[96];
    long us = -1;
    int n;

    if (req->query.len > 3 && strncmp(q, "us=", 3) == 0) {
        us = strtol(q + 3, NULL, 10);
    }
    if (us < 100 || us > 1000000) {
        pt_side_server_respond(req, "400 Bad Request", "text/plain", "expected ?us= from 100 to 1000000\n", 34);
        return;
    }
    if (pt_gil_probe_set_interval_us((unsigned long)us) < 0) {
        static const char why[] = "the switch interval is not known here: the GIL probe does not know this "
                                  "CPython's GIL (the start-up log says why)\n";

        pt_side_server_respond(req, "409 Conflict", "text/plain", why, sizeof(why) - 1);
        return;
    }
    pt_log_info("GIL switch interval set to %ld us from the monitor", us);
    n = snprintf(buf, sizeof(buf), "{\"interval_us\":%ld}", us);
    pt_side_server_respond(req, "200 OK", "application/json", buf, (size_t)n);
}

/* The page's load buttons: how many clients on --gil-load's I/O path and on its CPU path (or its third, the
 * shared-state path, in the CPU path's place), for 10 s. */
static const struct {
    const char *query, *label;
    int io, cpu;
    bool shared;
} LOADS[] = {
    { "kind=io", "8 I/O-bound clients", 8, 0, false },
    { "kind=cpu", "8 CPU-bound clients", 0, 8, false },
    { "kind=mixed", "mixed: 4 I/O + 4 CPU", 4, 4, false },
    { "kind=shared", "8 clients on shared state", 0, 8, true },
};

/* POST /load?kind=io|cpu|mixed|shared: the page's buttons, --gil-load's paths (server/loopback_load.c). */
static void
start_load(pt_request_t *req)
{
    const pt_config_t *cfg = monitor.cfg;
    char err[160];
    size_t i;
    int r = -1;

    if (req->method.len != 4 || memcmp(req->method.base, "POST", 4) != 0) {
        pt_side_server_respond(req, "405 Method Not Allowed", "text/plain", "POST it\n", 8);
        return;
    }
    for (i = 0; i < sizeof(LOADS) / sizeof(LOADS[0]); i++) {
        if (req->query.len == strlen(LOADS[i].query) && memcmp(req->query.base, LOADS[i].query, req->query.len) == 0) {
            break;
        }
    }
    if (!cfg->gil_load_io[0]) {
        snprintf(err, sizeof(err), "no load configured (--gil-load IO_PATH,CPU_PATH)\n");
    } else if (i == sizeof(LOADS) / sizeof(LOADS[0])) {
        snprintf(err, sizeof(err), "expected ?kind=io, cpu, mixed or shared\n");
    } else if (LOADS[i].shared && !cfg->gil_load_shared[0]) {
        snprintf(err, sizeof(err), "no shared-state path configured (--gil-load IO_PATH,CPU_PATH,SHARED_PATH)\n");
    } else {
        r = pt_load_start(&monitor.side.loop, LOADS[i].label, cfg->gil_load_io, LOADS[i].io,
                          LOADS[i].shared ? cfg->gil_load_shared : cfg->gil_load_cpu, LOADS[i].cpu, 10, err,
                          sizeof(err));
    }
    if (r == 0) {
        pt_side_server_respond(req, "202 Accepted", "application/json", "{\"started\":true}", 16);
    } else {
        pt_side_server_respond(req, "409 Conflict", "text/plain", err, strlen(err));
    }
}

static void
on_request(pt_app_t *app, pt_request_t *req)
{
    if (pt_side_server_path_is(req, "/") || pt_side_server_path_is(req, "/index.html")) {
        pt_side_server_respond(req, "200 OK", "text/html; charset=utf-8", gil_monitor_html,
                               sizeof(gil_monitor_html) - 1);
    } else if (pt_side_server_path_is(req, "/events")) {
        subscribe(req);
    } else if (pt_side_server_path_is(req, "/metrics")) {
        metrics(req);
    } else if (pt_side_server_path_is(req, "/snapshot")) {
        pt_side_server_respond(req, "200 OK", "application/json", monitor.json.data ? monitor.json.data : "{}",
                               monitor.json.data ? monitor.json.len : 2);
    } else if (pt_side_server_path_is(req, "/interval")) {
        set_interval(req);
    } else if (pt_side_server_path_is(req, "/load")) {
        start_load(req);
    } else {
        pt_side_server_respond(req, "404 Not Found", "text/plain", "not found\n", 10);
    }
}

static void
on_gone(pt_app_t *app, pt_request_t *req)
{
    int i;

    for (i = 0; i < monitor.nsubscribers; i++) {
        if (monitor.subscribers[i] == req) {
            drop_subscriber(i);
            return;
        }
    }
}

static void
name_thread(void)
{
    pt_gil_thread_name("gil-monitor", "monitor");
}

const char *
pt_gil_page(size_t *len)
{
    *len = sizeof(gil_monitor_html) - 1;
    return gil_monitor_html;
}

/* Under --processes a worker's monitor listens on an ephemeral port of the monitor's host (or a socket path of
 * its own), since the master serves the page on the monitor address. */
static const char *
worker_bind(const pt_config_t *cfg)
{
    static char spec[300];
    char host[256];
    int port;
    bool is_unix;

    if (pt_bind_parse(cfg->gil_monitor, host, sizeof(host), &port, &is_unix) != 0) {
        return cfg->gil_monitor;
    }
    if (is_unix) {
        snprintf(spec, sizeof(spec), "unix:%s.%d.%d", host, cfg->worker_slot, (int)getpid());
    } else {
        snprintf(spec, sizeof(spec), strchr(host, ':') ? "[%s]:0" : "%s:0", host);
    }
    return spec;
}

int
pt_gil_monitor_start(const pt_config_t *cfg, const char **url)
{
    pt_app_t app = { .on_request = on_request, .on_gone = on_gone, .description = "gil monitor" };
    int r;

    monitor.worker_slot = cfg->worker_slot;
    snprintf(monitor.python, sizeof(monitor.python), "%.*s", (int)strcspn(Py_GetVersion(), " "), Py_GetVersion());
    monitor.cfg = cfg;
    r = pt_side_server_listen(&monitor.side, cfg, cfg->worker_slot ? worker_bind(cfg) : cfg->gil_monitor, &app);
    if (r < 0) {
        return r;
    }
    monitor.sampler.takes_lag = true;
    uv_timer_init(&monitor.side.loop, &monitor.tick);
    uv_timer_start(&monitor.tick, on_tick, TICK_MS, TICK_MS);
    pt_gil_sample(&monitor.sampler, &monitor.view);
    *url = pt_side_server_url(&monitor.side);
    if (cfg->worker_slot) {
        pt_log_info("GIL monitor of worker %d on %s", cfg->worker_slot, *url);
    } else {
        pt_log_info("GIL monitor on %s", *url);
    }
    return pt_side_server_run(&monitor.side, name_thread);
}
