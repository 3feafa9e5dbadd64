/*
 * A bounded load on the server's own loopback address, driven from a side server's loop (the GIL monitor's
 * thread): a few keep-alive clients, each sending GET requests back to back for some seconds, then closing. The
 * GIL page's buttons start it, so a person without wrk sees what threads and the GIL do under I/O-bound and
 * CPU-bound load. Each client ends after the response in flight when the time is up, so the server finished
 * every request the load counted (the routes table agrees with it). It connects only to a loopback address the
 * server listens on, at most PT_LOAD_MAX_CLIENTS clients for at most PT_LOAD_MAX_SECONDS, one load at a time.
 */
#include "loopback_load.h"

#include <llhttp.h>
#include <stdio.h>
#include <string.h>

#include "log.h"

#define PT_LOAD_GRACE_MS 5000

typedef struct {
    uv_tcp_t tcp;
    uv_connect_t connect;
    uv_write_t write;
    llhttp_t parser;
    const char *req; /* the request it repeats */
    char rbuf[16384];
    bool open;
} client_t;

static struct {
    /* Set once by the loop thread before the monitor can be asked (pt_load_set_target). */
    _Atomic bool target_set;
    struct sockaddr_storage addr;
    char target[80];
    /* The load: the side loop's thread only. */
    llhttp_settings_t settings;
    uv_loop_t *loop;
    uv_timer_t timer;
    bool timer_ready;
    client_t clients[PT_LOAD_MAX_CLIENTS];
    char reqs[2][PT_LOAD_MAX_PATH + 200]; /* the request line, Host (the target) and User-Agent */
    int nclients, nopen;
    bool running, stopping;
    uint64_t end_ms, done, errors;
    char label[32];
} load;

void
pt_load_set_target(const pt_listener_t *ls, int n)
{
    int i;

    for (i = 0; i < n && !atomic_load(&load.target_set); i++) {
        const char *host = ls[i].name;
        struct sockaddr_in *v4 = (struct sockaddr_in *)&load.addr;
        struct sockaddr_in6 *v6 = (struct sockaddr_in6 *)&load.addr;

        if (ls[i].is_unix || ls[i].tls) {
            continue; /* the load speaks plain HTTP: with TLS only, the page has no load buttons */
        }
        host = strcmp(host, "0.0.0.0") == 0 ? "127.0.0.1" : strcmp(host, "::") == 0 ? "::1" : host;
        if (uv_ip4_addr(host, ls[i].port, v4) == 0) {
            if ((ntohl(v4->sin_addr.s_addr) >> 24) != 127) {
                continue;
            }
            if (snprintf(load.target, sizeof(load.target), "%s:%d", host, ls[i].port) >= (int)sizeof(load.target)) {
                continue; /* cannot be: host parsed as an address */
            }
        } else if (uv_ip6_addr(host, ls[i].port, v6) == 0) {
            if (!IN6_IS_ADDR_LOOPBACK(&v6->sin6_addr)) {
                continue;
            }
            if (snprintf(load.target, sizeof(load.target), "[%s]:%d", host, ls[i].port) >= (int)sizeof(load.target)) {
                continue;
            }
        } else {
            continue;
        }
        atomic_store(&load.target_set, true);
    }
}

static void
on_closed(uv_handle_t *h)
{
    if (--load.nopen == 0) {
        load.running = false;
        uv_timer_stop(&load.timer);
    }
}

static void
client_close(client_t *c)
{
    if (c->open) {
        c->open = false;
        uv_close((uv_handle_t *)&c->tcp, on_closed);
    }
}

static void
on_written(uv_write_t *w, int status)
{
    if (status < 0) {
        load.errors += !load.stopping;
        client_close(w->data);
    }
}

static void
send_request(client_t *c)
{
    uv_buf_t b = uv_buf_init((char *)c->req, (unsigned)strlen(c->req));

    c->write.data = c;
    if (uv_write(&c->write, (uv_stream_t *)&c->tcp, &b, 1, on_written) < 0) {
        load.errors++;
        client_close(c);
    }
}

static int
on_message_complete(llhttp_t *p)
{
    client_t *c = p->data;

    load.done++;
    if (load.stopping || uv_now(load.loop) >= load.end_ms) {
        client_close(c);
        return HPE_PAUSED;
    }
    send_request(c);
    return 0;
}

static void
on_alloc(uv_handle_t *h, size_t hint, uv_buf_t *buf)
{
    client_t *c = h->data;

    *buf = uv_buf_init(c->rbuf, sizeof(c->rbuf));
}

static void
on_read(uv_stream_t *s, ssize_t n, const uv_buf_t *buf)
{
    client_t *c = s->data;
    llhttp_errno_t e;

    if (n == 0 || !c->open) {
        return;
    }
    if (n < 0) {
        load.errors += !load.stopping;
        client_close(c);
        return;
    }
    e = llhttp_execute(&c->parser, buf->base, (size_t)n);
    if (e != HPE_OK && e != HPE_PAUSED) {
        pt_log_warning("load: a bad response from %s: %s", load.target, llhttp_errno_name(e));
        load.errors++;
        client_close(c);
    }
}

static void
on_connected(uv_connect_t *req, int status)
{
    client_t *c = req->data;

    if (status < 0 || !c->open) {
        load.errors += status < 0 && status != UV_ECANCELED; /* not a connect the end cancelled */
        client_close(c);
        return;
    }
    uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read);
    send_request(c);
}

/* Closes the clients still waiting for a response, PT_LOAD_GRACE_MS after the end. */
static void
on_time_up(uv_timer_t *t)
{
    int i;

    load.stopping = true;
    for (i = 0; i < load.nclients; i++) {
        client_close(&load.clients[i]);
    }
}

/* "GET path HTTP/1.1" for a path of printable ASCII starting with '/': 0, or -1. */
static int
build_request(char *out, size_t cap, const char *path)
{
    size_t i, len = strlen(path);

    if (len == 0 || len > PT_LOAD_MAX_PATH || path[0] != '/') {
        return -1;
    }
    for (i = 0; i < len; i++) {
        if (path[i] <= ' ' || path[i] > '~') {
            return -1;
        }
    }
    snprintf(out, cap, "GET %s HTTP/1.1\r\nHost: %s\r\nUser-Agent: ponte-gil-page-load\r\n\r\n", path, load.target);
    return 0;
}

int
pt_load_start(uv_loop_t *loop, const char *label, const char *path_a, int n_a, const char *path_b, int n_b,
              double seconds, char *err, size_t cap)
{
    int i, n = n_a + n_b;

    if (!atomic_load(&load.target_set)) {
        snprintf(err, cap, "the server listens on no loopback TCP address");
        return -1;
    }
    if (load.running) {
        snprintf(err, cap, "a load (%s) is already running", load.label);
        return -1;
    }
    if (n < 1 || n > PT_LOAD_MAX_CLIENTS || n_a < 0 || n_b < 0 || seconds <= 0 || seconds > PT_LOAD_MAX_SECONDS
        || build_request(load.reqs[0], sizeof(load.reqs[0]), path_a) < 0
        || (n_b > 0 && build_request(load.reqs[1], sizeof(load.reqs[1]), path_b) < 0)) {
        snprintf(err, cap, "bad load: 1 to %d clients, up to %d s, paths of printable ASCII starting with /",
                 PT_LOAD_MAX_CLIENTS, PT_LOAD_MAX_SECONDS);
        return -1;
    }
    if (!load.timer_ready) {
        llhttp_settings_init(&load.settings);
        load.settings.on_message_complete = on_message_complete;
        uv_timer_init(loop, &load.timer);
        load.timer_ready = true;
    }
    load.loop = loop;
    load.nclients = load.nopen = n;
    load.running = true;
    load.stopping = false;
    load.done = load.errors = 0;
    snprintf(load.label, sizeof(load.label), "%s", label);
    load.end_ms = uv_now(loop) + (uint64_t)(seconds * 1000);
    /* Each client stops by itself after the response in flight at the end; the timer only closes one whose request
     * does not finish within PT_LOAD_GRACE_MS of it. So the server finishes every request the load counts. */
    uv_timer_start(&load.timer, on_time_up, (uint64_t)(seconds * 1000) + PT_LOAD_GRACE_MS, 0);
    for (i = 0; i < n; i++) {
        client_t *c = &load.clients[i];

        memset(c, 0, sizeof(*c));
        c->req = load.reqs[i < n_a ? 0 : 1];
        c->open = true;
        uv_tcp_init(loop, &c->tcp);
        c->tcp.data = c;
        c->connect.data = c;
        llhttp_init(&c->parser, HTTP_RESPONSE, &load.settings);
        c->parser.data = c;
        if (uv_tcp_connect(&c->connect, &c->tcp, (const struct sockaddr *)&load.addr, on_connected) < 0) {
            load.errors++;
            client_close(c);
        }
    }
    pt_log_info("load from the GIL page: %s, %d client(s) for %g s on http://%s", label, n, seconds, load.target);
    return 0;
}

void
pt_load_json(pt_buf_t *b, uint64_t now_ms)
{
    double left = load.running && load.end_ms > now_ms ? (double)(load.end_ms - now_ms) / 1e3 : 0;

    pt_buf_printf(b,
                  "{\"running\":%s,\"label\":\"%s\",\"clients\":%d,\"remaining_s\":%.1f,\"requests\":%llu,"
                  "\"errors\":%llu,\"target\":",
                  load.running ? "true" : "false", load.label, load.running ? load.nopen : 0, left,
                  (unsigned long long)load.done, (unsigned long long)load.errors);
    if (atomic_load(&load.target_set)) {
        pt_buf_printf(b, "\"%s\"}", load.target);
    } else {
        pt_buf_printf(b, "null}");
    }
}
