/*
 * The GIL per route (--gil-routes N): for each route, requests, GIL held and waited per request, and latency, so
 * the GIL view can say which endpoint holds the lock and which one suffers for it.
 *
 * A route is the request's path with each all-digit segment written {n} and each UUID-like one (8-4-4-4-12 hex
 * digits, or 32 in a row) {uuid}, so /users/42 and /users/43 are one route. The first N routes seen are kept
 * apart; the rest count as "other" (a client sending random paths cannot grow the table).
 *
 * Whoever finishes a request records it (a WSGI worker, the loop thread) under a mutex; the monitor's thread reads
 * under the same mutex and never takes the GIL. Each route keeps totals since start (for /metrics' counters) and
 * one slot per second for the last WINDOW_S whole seconds (the live table: rates, means and percentiles over a
 * window it names, so they do not flicker from one 100 ms snapshot to the next).
 */
#include "gateway.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../server/log.h"

#define WINDOW_S 5
#define SLOTS (WINDOW_S + 1) /* the window, and the second being counted */
#define KEY_MAX 96
/* Latency buckets: LAT_SUB per power of two of nanoseconds, from 1.02 µs (2^10 ns) up; each at most 19% wide. */
#define LAT_SUB 4
#define LAT_OCTAVES 28
#define LAT_BUCKETS (LAT_SUB * LAT_OCTAVES)

typedef struct {
    uint64_t sec; /* the second this slot counts (monotonic) */
    uint64_t n, hold, wait_start, wait_run;
    uint32_t lat[LAT_BUCKETS];
} route_slot_t;

typedef struct {
    char key[KEY_MAX];
    uint64_t n, hold, wait_start, wait_run, lat_sum; /* since start */
    route_slot_t slots[SLOTS];
} route_t;

static struct {
    uv_mutex_t lock;
    bool on;
    int max, n; /* routes[max] is "other" */
    route_t *routes;
} route_table;

int
pt_gil_routes_init(int max)
{
    if (max <= 0) {
        return 0;
    }
    route_table.routes = calloc((size_t)max + 1, sizeof(route_t));
    if (route_table.routes == NULL || uv_mutex_init(&route_table.lock) != 0) {
        free(route_table.routes);
        route_table.routes = NULL;
        return -1;
    }
    strcpy(route_table.routes[max].key, "other");
    route_table.max = max;
    route_table.on = true;
    return 0;
}

bool
pt_gil_routes_on(void)
{
    return route_table.on;
}

static bool
is_hex(char c)
{
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
}

static bool
is_uuid(const char *s, size_t len)
{
    size_t i;

    if (len == 32) {
        for (i = 0; i < len && is_hex(s[i]); i++) {
        }
        return i == len;
    }
    if (len != 36) {
        return false;
    }
    for (i = 0; i < len; i++) {
        if ((i == 8 || i == 13 || i == 18 || i == 23) ? s[i] != '-' : !is_hex(s[i])) {
            return false;
        }
    }
    return true;
}

static bool
is_number(const char *s, size_t len)
{
    size_t i;

    for (i = 0; i < len && s[i] >= '0' && s[i] <= '9'; i++) {
    }
    return len > 0 && i == len;
}

/* The route of a path, into key (KEY_MAX bytes, NUL-terminated; a longer one is cut). */
static void
route_key(const char *path, size_t len, char *key)
{
    size_t i = 0, k = 0;

    if (len == 0) {
        strcpy(key, "/");
        return;
    }
    while (i < len && k < KEY_MAX - 1) {
        size_t j = i;
        const char *seg;

        if (path[i] == '/') {
            key[k++] = '/';
            i++;
            continue;
        }
        while (j < len && path[j] != '/') {
            j++;
        }
        seg = is_number(path + i, j - i) ? "{n}" : is_uuid(path + i, j - i) ? "{uuid}" : NULL;
        if (seg == NULL) {
            size_t take = j - i < KEY_MAX - 1 - k ? j - i : KEY_MAX - 1 - k;

            memcpy(key + k, path + i, take);
            k += take;
        } else if (k + strlen(seg) < KEY_MAX) {
            memcpy(key + k, seg, strlen(seg));
            k += strlen(seg);
        } else {
            break;
        }
        i = j;
    }
    key[k] = '\0';
}

static int
lat_bucket(uint64_t ns)
{
    int e, sub;

    if (ns < 1024) {
        return 0;
    }
    e = 63 - __builtin_clzll(ns); /* the leading one's bit */
    /* ns is in [2^e, 2^(e+1)): the two bits after the leading one pick the quarter. */
    sub = e >= 2 ? (int)((ns >> (e - 2)) & 3) : 0;
    e -= 10;
    return e >= LAT_OCTAVES ? LAT_BUCKETS - 1 : e * LAT_SUB + sub;
}

/* The upper bound of bucket b, in seconds. */
static double
lat_le_s(int b)
{
    int e = b / LAT_SUB + 10, sub = b % LAT_SUB;

    return (double)(1ull << e) * (1.0 + (sub + 1) / (double)LAT_SUB) / 1e9;
}

static route_t *
find(const char *key)
{
    int i;

    for (i = 0; i < route_table.n; i++) {
        if (strcmp(route_table.routes[i].key, key) == 0) {
            return &route_table.routes[i];
        }
    }
    if (route_table.n < route_table.max) {
        strcpy(route_table.routes[route_table.n].key, key);
        return &route_table.routes[route_table.n++];
    }
    return &route_table.routes[route_table.max];
}

/*
 * The route of a request's path. Each thread remembers its last path and route: a path always maps to the same
 * route (routes are only added, never moved or removed), so a run of requests to one path costs a memcmp instead
 * of a key, a search and the lock.
 */
static int
route_of(const pt_request_t *req)
{
    static _Thread_local struct {
        char path[KEY_MAX];
        size_t len;
        int route;
    } last = { .route = -1 };
    char key[KEY_MAX];
    int i;

    if (last.route >= 0 && req->path.len == last.len && memcmp(req->path.base, last.path, last.len) == 0) {
        return last.route;
    }
    route_key(req->path.base, req->path.len, key);
    uv_mutex_lock(&route_table.lock);
    i = (int)(find(key) - route_table.routes);
    uv_mutex_unlock(&route_table.lock);
    if (req->path.len <= sizeof(last.path)) {
        memcpy(last.path, req->path.base, req->path.len);
        last.len = req->path.len;
        last.route = i;
    }
    return i;
}

int
pt_gil_route_index(const pt_request_t *req)
{
    return route_table.on ? route_of(req) : -1;
}

void
pt_gil_route_name(int i, char *out, size_t cap)
{
    if (!route_table.on || i < 0 || i > route_table.max) {
        snprintf(out, cap, "%s", "(no request)");
        return;
    }
    uv_mutex_lock(&route_table.lock);
    snprintf(out, cap, "%s", route_table.routes[i].key);
    uv_mutex_unlock(&route_table.lock);
}

void
pt_gil_route_done(const pt_request_t *req, int route, uint64_t hold, uint64_t wait_start, uint64_t wait_run,
                  uint64_t end_ns)
{
    uint64_t lat = end_ns > req->start_ns ? end_ns - req->start_ns : 0, sec = end_ns / 1000000000u;
    route_t *r;
    route_slot_t *s;

    if (!route_table.on) {
        return;
    }
    if (route < 0 || route > route_table.max) {
        route = route_of(req);
    }
    uv_mutex_lock(&route_table.lock);
    r = &route_table.routes[route];
    r->n++;
    r->hold += hold;
    r->wait_start += wait_start;
    r->wait_run += wait_run;
    r->lat_sum += lat;
    s = &r->slots[sec % SLOTS];
    if (s->sec != sec) {
        memset(s, 0, sizeof(*s));
        s->sec = sec;
    }
    s->n++;
    s->hold += hold;
    s->wait_start += wait_start;
    s->wait_run += wait_run;
    s->lat[lat_bucket(lat)]++;
    uv_mutex_unlock(&route_table.lock);
}

/* ---- the views: the monitor's thread, under the lock ---- */

typedef struct {
    const char *key;
    uint64_t n, hold, wait_start, wait_run; /* in the window */
    double p50_s, p99_s;
} window_t;

static double
quantile(const uint32_t *lat, uint64_t n, double q)
{
    uint64_t want = (uint64_t)(q * (double)n + 0.999999), cum = 0;
    int b;

    for (b = 0; b < LAT_BUCKETS; b++) {
        cum += lat[b];
        if (cum >= want && cum > 0) {
            return lat_le_s(b);
        }
    }
    return 0;
}

/* The route's last WINDOW_S whole seconds before `sec`. */
static window_t
window(const route_t *r, uint64_t sec)
{
    uint32_t lat[LAT_BUCKETS] = { 0 };
    window_t w = { r->key, 0, 0, 0, 0, 0, 0 };
    int i, b;

    for (i = 0; i < SLOTS; i++) {
        const route_slot_t *s = &r->slots[i];

        if (s->n == 0 || s->sec >= sec || s->sec + WINDOW_S < sec) {
            continue;
        }
        w.n += s->n;
        w.hold += s->hold;
        w.wait_start += s->wait_start;
        w.wait_run += s->wait_run;
        for (b = 0; b < LAT_BUCKETS; b++) {
            lat[b] += s->lat[b];
        }
    }
    w.p50_s = quantile(lat, w.n, 0.50);
    w.p99_s = quantile(lat, w.n, 0.99);
    return w;
}

static double
per_req_ms(uint64_t ns, uint64_t n)
{
    return n ? (double)ns / 1e6 / (double)n : 0;
}

void
pt_gil_routes_json(pt_buf_t *b)
{
    uint64_t sec = pt_gil_now() / 1000000000u;
    const char *sep = "";
    int i;

    pt_buf_printf(b, "{\"window_s\":%d,\"max\":%d,\"rows\":[", WINDOW_S, route_table.max);
    if (route_table.on) {
        uv_mutex_lock(&route_table.lock);
        for (i = 0; i <= route_table.max; i++) {
            const route_t *r = &route_table.routes[i];
            window_t w;

            if (r->n == 0) {
                continue;
            }
            w = window(r, sec);
            pt_buf_printf(b, "%s{\"route\":", sep);
            sep = ",";
            pt_gil_json_str(b, r->key);
            pt_buf_printf(
                b,
                ",\"requests_total\":%llu,\"requests_per_s\":%.1f,\"gil_held_ms\":%.3f,\"gil_wait_start_ms\":%.3f,"
                "\"gil_wait_run_ms\":%.3f,\"gil_held_share\":%.2f,\"p50_ms\":%.3f,\"p99_ms\":%.3f}",
                (unsigned long long)r->n, (double)w.n / WINDOW_S, per_req_ms(w.hold, w.n),
                per_req_ms(w.wait_start, w.n), per_req_ms(w.wait_run, w.n), 100.0 * (double)w.hold / 1e9 / WINDOW_S,
                w.p50_s * 1e3, w.p99_s * 1e3);
        }
        uv_mutex_unlock(&route_table.lock);
    }
    pt_buf_append(b, "]}", 2);
}

void
pt_gil_routes_metrics(pt_buf_t *b)
{
    uint64_t sec = pt_gil_now() / 1000000000u;
    int i;

    if (!route_table.on) {
        return;
    }
    pt_buf_printf(b,
                  "# HELP ponte_route_requests_total Requests finished, per route (--gil-routes).\n"
                  "# TYPE ponte_route_requests_total counter\n"
                  "# HELP ponte_route_gil_hold_seconds_total GIL held by the route's requests.\n"
                  "# TYPE ponte_route_gil_hold_seconds_total counter\n"
                  "# HELP ponte_route_gil_wait_seconds_total GIL waited by the route's requests: to start (phase "
                  "start, WSGI only) and while running (phase run).\n"
                  "# TYPE ponte_route_gil_wait_seconds_total counter\n"
                  "# HELP ponte_route_latency_seconds Latency to the app's last byte, over the last 5 whole "
                  "seconds (quantiles) and since start (sum, count).\n"
                  "# TYPE ponte_route_latency_seconds summary\n");
    uv_mutex_lock(&route_table.lock);
    for (i = 0; i <= route_table.max; i++) {
        const route_t *r = &route_table.routes[i];
        pt_buf_t label = { 0 };
        window_t w;

        if (r->n == 0) {
            continue;
        }
        w = window(r, sec);
        pt_gil_json_str(&label, r->key); /* a path holds no control bytes: the JSON string is the label */
        pt_buf_printf(b, "ponte_route_requests_total{route=%.*s} %llu\n", (int)label.len, label.data,
                      (unsigned long long)r->n);
        pt_buf_printf(b, "ponte_route_gil_hold_seconds_total{route=%.*s} %.6f\n", (int)label.len, label.data,
                      (double)r->hold / 1e9);
        pt_buf_printf(b, "ponte_route_gil_wait_seconds_total{route=%.*s,phase=\"start\"} %.6f\n", (int)label.len,
                      label.data, (double)r->wait_start / 1e9);
        pt_buf_printf(b, "ponte_route_gil_wait_seconds_total{route=%.*s,phase=\"run\"} %.6f\n", (int)label.len,
                      label.data, (double)r->wait_run / 1e9);
        pt_buf_printf(b,
                      "ponte_route_latency_seconds{route=%.*s,quantile=\"0.5\"} %.6f\n"
                      "ponte_route_latency_seconds{route=%.*s,quantile=\"0.99\"} %.6f\n"
                      "ponte_route_latency_seconds_sum{route=%.*s} %.6f\n"
                      "ponte_route_latency_seconds_count{route=%.*s} %llu\n",
                      (int)label.len, label.data, w.p50_s, (int)label.len, label.data, w.p99_s, (int)label.len,
                      label.data, (double)r->lat_sum / 1e9, (int)label.len, label.data, (unsigned long long)r->n);
        pt_buf_free(&label);
    }
    uv_mutex_unlock(&route_table.lock);
}
