/*
 * libFuzzer target over the whole HTTP core (server/, no Python): the fuzzer's bytes go to a real connection
 * (conn.c, http.c, chunked.c, request.c, out.c) over a socketpair, split into reads at points the input chooses,
 * then the client half-closes. A C app on the loop thread answers every request with what it saw, either with
 * the whole body in hand (WSGI --threads 0) or streaming it (ASGI). The responses are then checked:
 *
 *   - every response is complete: a status line, headers, and exactly Content-Length bytes of body;
 *   - the app's responses come in request order, numbered 1, 2, 3... with no gap;
 *   - a body framed by Content-Length reached the app whole, no more and no less;
 *   - after an error the server answered itself (4xx, 501, 505), nothing more is sent; and never a 500;
 *   - the connection closes after the half-close: no request is left hanging.
 *
 * A broken invariant aborts, which libFuzzer reports like a crash; ASan and UBSan catch the rest. A hash of the
 * input chooses the app mode and the read splits, so that any HTTP bytes are an input (tests/corpus seeds it) and
 * a failing input fails the same way every time.
 *
 *   build:  CC=clang meson setup build-fuzz -Dfuzz=true -Db_sanitize=address,undefined -Db_lundef=false
 *   run:    tests/fuzz/run build-fuzz 60         (what the suite does; tests/fuzz/README.md says more)
 *   replay: build/tests/fuzz/fuzz_replay FILE... (the suite replays tests/fuzz/regressions/ in every build)
 */
#include <signal.h>
#include <stdint.h>
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
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

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

/* ---- the invariants ---- */

static void
broken(const char *what, const char *out, size_t len)
{
    fprintf(stderr, "fuzz_http: invariant broken: %s\nresponses (%zu bytes):\n%.*s\n", what, len,
            (int)(len > 2000 ? 2000 : len), out);
    abort();
}

/* Checks the byte stream the server sent back. */
static void
check_responses(const char *out, size_t len)
{
    size_t off = 0;
    unsigned expect = 1;
    bool ended = false;

    while (off < len) {
        const char *head_end = memmem(out + off, len - off, "\r\n\r\n", 4);
        const char *cl;
        long long clen = 0;
        int status;
        bool head;

        if (ended) {
            broken("a response after the server's own error response", out, len);
        }
        if (head_end == NULL || len - off < 12 || memcmp(out + off, "HTTP/1.", 7) != 0) {
            broken("an incomplete or malformed response head", out, len);
        }
        status = atoi(out + off + 9);
        cl = memmem(out + off, (size_t)(head_end - (out + off)), "\r\nContent-Length: ", 18);
        if (cl != NULL) {
            clen = atoll(cl + 18);
        } else if (status != 100) {
            broken("a response without Content-Length", out, len);
        }
        head = memmem(out + off, (size_t)(head_end - (out + off)), "\r\nX-Head: 1", 11) != NULL;
        if (head) {
            clen = 0;
        }
        off = (size_t)(head_end - out) + 4;
        if ((size_t)clen > len - off) {
            broken("a response body cut short", out, len);
        }
        if (status == 200 && head) {
            expect++; /* the seq is in the body a HEAD response does not have */
        } else if (status == 200) {
            unsigned s = 0;
            unsigned long long body_len = 0;
            long long declared = -1;
            char body[64]; /* the body alone, terminated: sscanf must not read on into what follows it */
            size_t n = (size_t)clen < sizeof(body) - 1 ? (size_t)clen : sizeof(body) - 1;

            memcpy(body, out + off, n);
            body[n] = '\0';
            if (sscanf(body, "seq=%u len=%llu cl=%lld", &s, &body_len, &declared) != 3 || s != expect) {
                broken("responses out of order, or one missing", out, len);
            }
            if (declared >= 0 && body_len != (unsigned long long)declared) {
                broken("the app saw a body of another length than Content-Length said", out, len);
            }
            expect++;
        } else if (status >= 500 && status != 501 && status != 505) {
            broken("an internal error: no input is the server's fault", out, len);
        } else if (status >= 400) {
            ended = true;
        }
        off += (size_t)clen;
    }
}

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

static void
setup(void)
{
    /* HTTP/1.x only: a preface would start HTTP/2, which fuzz_h2.c fuzzes. */
    char *args[] = { "fuzz", "--max-header-size", "2048",     "--max-body-size", "65536", "--max-headers",
                     "20",   "--log-level",       "critical", "--http",          "1",     "x:y",
                     NULL };

    if (pt_config_parse(&cfg, 12, args) != 0) {
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

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static bool ready;
    int sv[2];
    pt_conn_t *c;
    char *out = NULL;
    size_t len = 0, cap = 0, off = 0;
    uint32_t h = 2166136261u, rng;
    bool whole;

    if (!ready) {
        setup();
        ready = true;
    }
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv) < 0) {
        return 0;
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
        pump(sv[1], &out, &len, &cap);
    }
    shutdown(sv[1], SHUT_WR);
    pump(sv[1], &out, &len, &cap);
    if (srv.nconns != 0) {
        pt_server_abort_all(&srv);
        uv_run(&loop, UV_RUN_NOWAIT);
        broken("the connection is still open after the client half-closed and everything was answered", out, len);
    }
    close(sv[1]);
    check_responses(out, len);
    free(out);
    return 0;
}
