/*
 * server/ end to end without Python: a C echo app behind the real connection code, over loopback sockets.
 * Run as `test_conn loop` (the app answers on the loop thread) or `test_conn worker` (a C worker thread answers
 * through the cross-thread channels of request.c). A client thread sends the requests; the loop runs in main.
 */
#include <arpa/inet.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "app.h"
#include "conn.h"
#include "listen.h"
#include "log.h"
#include "tap.h"

const char *pt_app_runtime_version(void);

const char *
pt_app_runtime_version(void)
{
    return "none";
}

static pt_config_t cfg;
static pt_server_t srv;
static pt_listener_t *listeners;
static int nlisteners, port;
static uv_async_t stop_async;

/* ---- the app: "METHOD PATH?QUERY|BODY" ---- */

static void
reply(pt_request_t *req)
{
    char body[8192];
    int n = snprintf(body, sizeof(body), "%.*s %.*s?%.*s|", (int)req->method.len, req->method.base, (int)req->path.len,
                     req->path.base, (int)req->query.len, req->query.base);
    ssize_t r;
    pt_buf_t out = { 0 };
    pt_resp_ctx_t ctx = pt_req_resp_ctx(req);
    pt_header_t h = { PT_SPAN("Content-Type"), PT_SPAN("text/plain") };

    while ((r = pt_req_read(req, body + n, sizeof(body) - (size_t)n, -1, true)) > 0) {
        n += (int)r;
    }
    pt_resp_head(&req->resp, &ctx, &out, PT_SPAN("200 OK"), &h, 1, n);
    pt_resp_body(&req->resp, &out, body, (size_t)n);
    pt_resp_end(&req->resp, &out);
    pt_req_send(req, &out, PT_SEND_END | PT_SEND_DONE);
    pt_buf_free(&out);
}

static pthread_mutex_t qlock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t qcond = PTHREAD_COND_INITIALIZER;
static pt_request_t *queue[64];
static int qlen;
static bool qstop;

static void *
worker(void *arg)
{
    for (;;) {
        pt_request_t *req;

        pthread_mutex_lock(&qlock);
        while (qlen == 0 && !qstop) {
            pthread_cond_wait(&qcond, &qlock);
        }
        if (qlen == 0) {
            pthread_mutex_unlock(&qlock);
            return NULL;
        }
        req = queue[0];
        memmove(queue, queue + 1, (size_t)--qlen * sizeof(*queue));
        pthread_mutex_unlock(&qlock);
        reply(req);
    }
}

static void
on_request(pt_app_t *app, pt_request_t *req)
{
    if (app->on_loop) {
        reply(req);
        return;
    }
    pthread_mutex_lock(&qlock);
    queue[qlen++] = req;
    pthread_cond_signal(&qcond);
    pthread_mutex_unlock(&qlock);
}

static void
on_drain(pt_app_t *app, pt_request_t *req)
{
}

static void
on_gone(pt_app_t *app, pt_request_t *req)
{
}

static pt_app_t app = { .on_request = on_request, .on_drain = on_drain, .on_gone = on_gone };

/* ---- the client ---- */

static int
dial(void)
{
    struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port) };
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct timeval tv = { 5, 0 };

    inet_pton(AF_INET, "127.0.0.1", &sa.sin_addr);
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
        close(fd);
        return -1;
    }
    return fd;
}

static void
send_all(int fd, const char *s)
{
    size_t n = strlen(s);

    while (n > 0) {
        ssize_t w = write(fd, s, n);

        if (w <= 0) {
            return;
        }
        s += w;
        n -= (size_t)w;
    }
}

/* Reads one response framed by Content-Length (or to EOF). Returns the status; body into `body`. */
static int
read_response(int fd, char *buf, size_t cap, size_t *have, char *body, size_t bodycap)
{
    char *end, *cl;
    size_t head, blen = 0;
    int status;

    for (;;) {
        buf[*have] = '\0';
        end = strstr(buf, "\r\n\r\n");
        if (end != NULL) {
            break;
        }
        ssize_t r = read(fd, buf + *have, cap - 1 - *have);

        if (r <= 0) {
            return -1;
        }
        *have += (size_t)r;
    }
    head = (size_t)(end - buf) + 4;
    status = atoi(buf + 9);
    cl = strcasestr(buf, "content-length: ");
    if (cl != NULL && cl < end) {
        blen = strtoul(cl + 16, NULL, 10);
    }
    if (strncmp(buf, "HTTP/1.1 100", 12) == 0) {
        blen = 0;
    }
    while (*have < head + blen) {
        ssize_t r = read(fd, buf + *have, cap - 1 - *have);

        if (r <= 0) {
            return -1;
        }
        *have += (size_t)r;
    }
    snprintf(body, bodycap, "%.*s", (int)blen, buf + head);
    memmove(buf, buf + head + blen, *have - head - blen);
    *have -= head + blen;
    return status;
}

static bool
peer_closed(int fd)
{
    char c;

    return read(fd, &c, 1) == 0;
}

static void *
client(void *arg)
{
    char buf[65536], body[8192];
    size_t have = 0;
    int fd, i, st;

    fd = dial();
    CHECK(fd >= 0, "connect");
    send_all(fd, "GET /a?x=1 HTTP/1.1\r\nHost: t\r\n\r\n");
    st = read_response(fd, buf, sizeof(buf), &have, body, sizeof(body));
    CHECK(st == 200 && strcmp(body, "GET /a?x=1|") == 0, "simple GET: %d %s", st, body);
    send_all(fd, "POST /b HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n\r\nhello");
    st = read_response(fd, buf, sizeof(buf), &have, body, sizeof(body));
    CHECK(st == 200 && strcmp(body, "POST /b?|hello") == 0, "keep-alive POST on the same connection: %s", body);

    send_all(fd,
             "GET /1 HTTP/1.1\r\nHost: t\r\n\r\nPOST /2 HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
             "3\r\nabc\r\n0\r\n\r\nGET /3 HTTP/1.1\r\nHost: t\r\n\r\n");
    for (i = 1; i <= 3; i++) {
        char want[32];

        snprintf(want, sizeof(want), i == 2 ? "POST /%d?|abc" : "GET /%d?|", i);
        st = read_response(fd, buf, sizeof(buf), &have, body, sizeof(body));
        CHECK(st == 200 && strcmp(body, want) == 0, "pipelined response %d in order: %s", i, body);
    }

    send_all(fd, "HEAD /h HTTP/1.1\r\nHost: t\r\n\r\nGET /after-head HTTP/1.1\r\nHost: t\r\n\r\n");
    {
        /* HEAD: the head says Content-Length, no body follows. */
        char *end;

        while ((end = strstr(buf, "\r\n\r\n")) == NULL || have == 0) {
            ssize_t r = read(fd, buf + have, sizeof(buf) - 1 - have);

            if (r <= 0) {
                break;
            }
            have += (size_t)r;
            buf[have] = '\0';
        }
        end = strstr(buf, "\r\n\r\n");
        CHECK(end != NULL && strncmp(buf, "HTTP/1.1 200", 12) == 0, "HEAD answered");
        if (end != NULL) {
            memmove(buf, end + 4, have - (size_t)(end + 4 - buf));
            have -= (size_t)(end + 4 - buf);
        }
        st = read_response(fd, buf, sizeof(buf), &have, body, sizeof(body));
        CHECK(st == 200 && strcmp(body, "GET /after-head?|") == 0, "no body after HEAD: %s", body);
    }
    close(fd);

    fd = dial();
    have = 0;
    send_all(fd, "GET /x HTTP/1.1\r\nHost: t\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n");
    st = read_response(fd, buf, sizeof(buf), &have, body, sizeof(body));
    CHECK(st == 400 && peer_closed(fd), "Content-Length with Transfer-Encoding: 400 and close");
    close(fd);

    fd = dial();
    have = 0;
    send_all(fd, "BREW /pot HTCPCP/1.0\r\n\r\n");
    st = read_response(fd, buf, sizeof(buf), &have, body, sizeof(body));
    CHECK(st == 400 && peer_closed(fd), "garbage: 400 and close");
    close(fd);

    fd = dial();
    have = 0;
    {
        char big[2048];

        memset(big, 'a', sizeof(big) - 1);
        big[sizeof(big) - 1] = '\0';
        send_all(fd, "GET / HTTP/1.1\r\nHost: t\r\nX-Big: ");
        send_all(fd, big);
        send_all(fd, "\r\n\r\n");
    }
    st = read_response(fd, buf, sizeof(buf), &have, body, sizeof(body));
    CHECK(st == 431, "head over --max-header-size: 431 (%d)", st);
    close(fd);

    fd = dial();
    have = 0;
    send_all(fd, "POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 1001\r\n\r\n");
    st = read_response(fd, buf, sizeof(buf), &have, body, sizeof(body));
    CHECK(st == 413, "body over --max-body-size: 413 (%d)", st);
    close(fd);

    fd = dial();
    have = 0;
    send_all(fd, "GET / HTTP/1.1\r\nHost: t\r\n");
    st = read_response(fd, buf, sizeof(buf), &have, body, sizeof(body));
    CHECK(st == 408 && peer_closed(fd), "incomplete head: 408 after --header-timeout");
    close(fd);

    uv_async_send(&stop_async);
    return NULL;
}

/* ---- the loop ---- */

static void
on_idle(pt_server_t *s)
{
    pt_loop_close_all(s->loop);
}

static void
on_stop(uv_async_t *a)
{
    pt_listen_close_all(listeners, nlisteners);
    srv.on_idle = on_idle;
    pt_server_shutdown(&srv);
}

int
main(int argc, char **argv)
{
    char *args[] = { "test",        "--max-header-size", "1024",  "--max-body-size",
                     "1000",        "--header-timeout",  "0.5",   "--bind",
                     "127.0.0.1:0", "--log-level",       "error", "x:y",
                     NULL };
    uv_loop_t *loop = uv_default_loop();
    pthread_t cli, wrk;

    app.streams_body = argc > 1 && strcmp(argv[1], "worker") == 0;
    app.on_loop = !app.streams_body;
    CHECK(pt_config_parse(&cfg, 12, args) == 0, "options parse");
    cfg.access_log = false;
    pt_log_level = cfg.log_level;
    pt_set_loop_thread();
    CHECK(pt_server_init(&srv, loop, &cfg, &app) == 0, "server init");
    CHECK(pt_listen_all(&srv, &listeners, &nlisteners) == 0, "listen");
    port = listeners[0].port;
    CHECK(port > 0, "bound to a free port (%d)", port);
    uv_async_init(loop, &stop_async, on_stop);
    if (app.streams_body) {
        pthread_create(&wrk, NULL, worker, NULL);
    }
    pthread_create(&cli, NULL, client, NULL);
    uv_run(loop, UV_RUN_DEFAULT);
    pthread_join(cli, NULL);
    if (app.streams_body) {
        pthread_mutex_lock(&qlock);
        qstop = true;
        pthread_cond_signal(&qcond);
        pthread_mutex_unlock(&qlock);
        pthread_join(wrk, NULL);
    }
    CHECK(srv.nconns == 0 && srv.nbusy == 0, "every connection closed and freed");
    pt_server_close(&srv);
    uv_run(loop, UV_RUN_DEFAULT);
    CHECK(uv_loop_close(loop) == 0, "no handle left open");
    free(listeners);
    return tap_done();
}
