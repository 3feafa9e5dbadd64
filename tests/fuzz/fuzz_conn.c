/*
 * What the fuzz targets share (fuzz_http.c, fuzz_h2.c): a loop and a server with a C app on the loop thread, and
 * one run of an input through a real connection over a socketpair, its bytes split into reads at points a hash of
 * the input chooses, then the client's half-close. The app answers every request with what it saw, either with the
 * whole body in hand (WSGI --threads 0) or streaming it (ASGI): "seq=N len=BODY cl=CONTENT-LENGTH", N counting the
 * requests of the run.
 */
#include "fuzz_conn.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "conn.h"
#include "listen.h"
#include "log.h"
#include "out.h"

const char *pt_app_runtime_version(void);
const char *pt_gil_page(size_t *len);

const char *
pt_app_runtime_version(void)
{
    return "none";
}

const char *
pt_gil_page(size_t *len)
{
    *len = 0;
    return "";
}

static uv_loop_t loop;
static pt_config_t cfg;
static pt_server_t srv;
static pt_listener_t listener = { .is_unix = true, .name = "fuzz", .url = "unix:fuzz" };
static unsigned seq; /* requests the app has seen on this input's connection */

/* ---- the app ---- */

static void
respond(pt_request_t *req, uint64_t body_len)
{
    char body[160];
    snprintf(body, sizeof(body), "seq=%u len=%llu cl=%lld", ++seq, (unsigned long long)body_len,
             (long long)req->content_length);
    pt_buf_t out = { 0 };
    pt_resp_ctx_t ctx = pt_req_resp_ctx(req);
    static const pt_header_t head_mark = { PT_SPAN("X-Head"), PT_SPAN("1") };

    char line[64];

    if (pt_req_body_error(req) != PT_BODY_ERR_NONE) {
        /* As the gateways do when the body could not be read: the error is the client's. */
        int status = pt_req_error_status(req);

        snprintf(line, sizeof(line), "%d %s", status, pt_status_reason(status));
        snprintf(body, sizeof(body), "%s", pt_status_reason(status));
    } else {
        snprintf(line, sizeof(line), "200 OK");
    }
    /* A response to HEAD has its Content-Length but no body: the header tells the checker so. */
    pt_resp_head(&req->resp, &ctx, &out, (pt_span_t){ line, strlen(line) }, &head_mark, req->is_head ? 1 : 0,
                 (int64_t)strlen(body));
    pt_resp_body(&req->resp, &out, body, strlen(body));
    pt_resp_end(&req->resp, &out);
    pt_req_send(req, &out, PT_SEND_END | PT_SEND_DONE);
    pt_buf_free(&out);
}

/* Reads what there is; answers once the body is complete (or failed). */
static void
take_body(pt_request_t *req)
{
    char buf[4096];
    uint64_t *got = (uint64_t *)&req->app_data;
    ssize_t r;

    while ((r = pt_req_read(req, buf, sizeof(buf), -1, false)) > 0) {
        *got += (uint64_t)r;
    }
    if (r != -EAGAIN) {
        respond(req, *got);
    }
}

static void
on_request(pt_app_t *app, pt_request_t *req)
{
    req->app_data = NULL; /* the body bytes read so far, as an integer */
    take_body(req);
}

static void
on_body(pt_app_t *app, pt_request_t *req)
{
    take_body(req);
}

static void
on_drain(pt_app_t *app, pt_request_t *req)
{
}

static void
on_gone(pt_app_t *app, pt_request_t *req)
{
    pt_buf_t out = { 0 };

    pt_req_send(req, &out, PT_SEND_ABORT | PT_SEND_DONE);
}

static pt_app_t app = {
    .on_loop = true, .on_request = on_request, .on_body = on_body, .on_drain = on_drain, .on_gone = on_gone
};

/* ---- the run ---- */

static void
pump(int fd, char **out, size_t *len, size_t *cap)
{
    for (int i = 0; i < 64; i++) {
        ssize_t r;

        uv_run(&loop, UV_RUN_NOWAIT);
        for (;;) {
            if (*cap - *len < 65536) {
                *cap = *cap * 2 + 65536;
                *out = realloc(*out, *cap);
            }
            r = read(fd, *out + *len, *cap - *len);
            if (r <= 0) {
                break;
            }
            *len += (size_t)r;
        }
        if (r == 0) {
            return; /* the server closed the connection */
        }
    }
}

void
fuzz_setup(int argc, char **argv)
{
    if (pt_config_parse(&cfg, argc, argv) != 0) {
        abort();
    }
    cfg.access_log = false;
    pt_log_level = cfg.log_level;
    uv_loop_init(&loop);
    signal(SIGPIPE, SIG_IGN);
    pt_set_loop_thread();
    if (pt_server_init(&srv, &loop, &cfg, &app) != 0) {
        abort();
    }
    listener.srv = &srv;
}

char *
fuzz_run(const uint8_t *head, size_t head_len, const uint8_t *data, size_t size, size_t *len, bool *still_open)
{
    int sv[2];
    pt_conn_t *c;
    char *out = NULL;
    size_t cap = 0, off = 0;
    uint32_t h = 2166136261u, rng;
    bool whole;

    *len = 0;
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv) < 0) {
        return NULL;
    }
    for (size_t i = 0; i < size; i++) {
        h = (h ^ data[i]) * 16777619u;
    }
    app.streams_body = h & 1;    /* ASGI-like, or the whole body first (WSGI --threads 0) */
    whole = ((h >> 1) & 3) == 0; /* a quarter of the runs in one read, the rest in pieces of 1 to 64 bytes */
    rng = h | 1;
    seq = 0;
    c = pt_conn_new(&srv);
    uv_pipe_init(&loop, &c->h.pipe, 0);
    uv_pipe_open(&c->h.pipe, sv[0]);
    pt_conn_start(&srv, &listener, c);
    if (head_len > 0 && send(sv[1], head, head_len, MSG_NOSIGNAL) > 0) {
        pump(sv[1], &out, len, &cap);
    }
    while (off < size) {
        size_t piece = whole ? size - off : 1 + (rng >> 16) % 64;

        rng = rng * 1103515245u + 12345u;
        if (piece > size - off) {
            piece = size - off;
        }
        if (send(sv[1], data + off, piece, MSG_NOSIGNAL) < 0) {
            break;
        }
        off += piece;
        pump(sv[1], &out, len, &cap);
    }
    shutdown(sv[1], SHUT_WR);
    pump(sv[1], &out, len, &cap);
    *still_open = srv.nconns != 0;
    if (*still_open) {
        pt_server_abort_all(&srv);
        uv_run(&loop, UV_RUN_NOWAIT);
    }
    close(sv[1]);
    return out;
}
