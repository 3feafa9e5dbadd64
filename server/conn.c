/*
 * Connections. One owner (the loop thread), one close path (pt_conn_close -> close callbacks -> conn_free).
 *
 * A connection serves one request at a time. The parser pauses at the end of every message; bytes that follow
 * (pipelined requests) wait in `rest` until the response to the current request is complete, so responses go out
 * strictly in order and a connection never holds more than one request plus a bounded amount of unparsed input.
 *
 * Apps that run on the loop thread (--threads 0) get the request once its body is in and answer at once; their
 * responses to pipelined requests parsed from one read are flushed together in one write. Apps on worker threads get
 * the request when its head is parsed; their output arrives as messages (handoff.c). Writing is out.c's job.
 */
#include "conn.h"

#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "h2.h"
#include "listen.h"
#include "log.h"
#include "out.h"
#include "tls.h"
#include "ws.h"

#define REST_MAX (64 * 1024) /* unparsed pipelined input kept before we stop reading */
#define LINGER_SECONDS 2.0   /* how long to drain a client's unread input before closing */

static void conn_process(pt_conn_t *c, const char *data, size_t n);
static bool conn_process_rest(pt_conn_t *c);
static void conn_start_reading(pt_conn_t *c);
static void conn_on_eof(pt_conn_t *c);
static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf);

/* ------------------------------------------------------------------------------------------------------------ */
/* Lifecycle */

pt_conn_t *
pt_conn_new(pt_server_t *srv)
{
    pt_conn_t *c = calloc(1, sizeof(*c));

    if (c == NULL) {
        return NULL;
    }
    c->srv = srv;
    if (pt_req_init(&c->req, c) < 0) {
        free(c);
        return NULL;
    }
    return c;
}

/*
 * A connection going idle between requests gives back what only a request needs: the head arena, the header
 * tables, the body and output buffers. An idle keep-alive connection then costs its struct alone (10,000 of them
 * take 14 MiB rather than 24), and the next request takes the same sizes back from malloc's per-thread cache.
 */
static void
conn_release_buffers(pt_conn_t *c)
{
    pt_req_release(&c->req);
    pt_http_release(&c->http);
    pt_out_release(c);
}

static void
conn_free(pt_conn_t *c)
{
    if (c->ws != NULL) {
        pt_ws_free(c->ws);
    }
    pt_h2_free(c->h2);
    pt_req_destroy(&c->req);
    pt_tls_free(c->tls);
    pt_http_release(&c->http);
    pt_buf_free(&c->rest);
    pt_buf_free(&c->wbuf);
    free(c);
}

static void
on_discard_close(uv_handle_t *h)
{
    conn_free(h->data);
}

void
pt_conn_discard(pt_conn_t *c, bool stream_initialised)
{
    if (stream_initialised) {
        c->h.handle.data = c;
        uv_close(&c->h.handle, on_discard_close);
    } else {
        conn_free(c);
    }
}

static void
on_handle_close(uv_handle_t *h)
{
    pt_conn_t *c = h->data;
    pt_server_t *srv = c->srv;

    if (--c->handles_open > 0) {
        return;
    }
    pt_server_remove_conn(srv, c);
    conn_free(c);
    if (srv->stopping && srv->nconns == 0 && srv->on_idle) {
        srv->on_idle(srv);
    }
}

static void
conn_close_handles(pt_conn_t *c)
{
    if (uv_is_closing(&c->h.handle)) {
        return;
    }
    uv_close(&c->h.handle, on_handle_close);
    uv_close((uv_handle_t *)&c->timer, on_handle_close);
}

static void
conn_stop_reading(pt_conn_t *c)
{
    if (c->reading) {
        uv_read_stop(&c->h.stream);
        c->reading = false;
    }
}

void
pt_conn_close(pt_conn_t *c)
{
    if (c->state == PT_CONN_CLOSED) {
        return;
    }
    c->state = PT_CONN_CLOSED;
    conn_stop_reading(c);
    if (c->app_busy && c->h2 != NULL) {
        pt_h2_conn_gone(c->h2); /* the handles close once the last stream's app lets go (h2.c) */
        return;
    }
    if (c->app_busy) {
        pt_app_t *app = c->srv->app;

        pt_req_client_gone(&c->req, PT_BODY_ERR_GONE);
        if (app->on_loop && (c->suspended || app->streams_body)) {
            /* A loop-thread app waiting on this client (for on_drain, or for body bytes): let it finish now. */
            c->suspended = false;
            app->on_gone(app, &c->req);
        }
        return;
    }
    conn_close_handles(c);
}

static void
on_linger_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
    pt_conn_t *c = s->data;

    if (nread < 0) {
        c->reading = false;
        pt_conn_close(c);
    }
}

static void
on_shutdown(uv_shutdown_t *sr, int status)
{
    pt_conn_t *c = sr->data;

    free(sr);
    if (status < 0 || !c->linger || c->state == PT_CONN_CLOSED) {
        pt_conn_close(c);
        return;
    }
    /*
     * Lingering close: the client may still be sending (a body we did not read). Closing with unread input makes the
     * kernel send RST, which can destroy our response before the client reads it. Read and discard for a while.
     */
    pt_conn_set_deadline(c, LINGER_SECONDS);
    conn_stop_reading(c);
    /* on_alloc, not the stream's alloc_cb: uv_read_stop just cleared that, and a NULL one fails the start. */
    c->reading = uv_read_start(&c->h.stream, on_alloc, on_linger_read) == 0;
    if (!c->reading) {
        pt_conn_close(c);
    }
}

void
pt_conn_end(pt_conn_t *c, bool linger)
{
    uv_shutdown_t *sr;

    if (c->state >= PT_CONN_SHUTDOWN) {
        return;
    }
    c->state = PT_CONN_ENDING;
    c->linger = (c->linger || linger) && !c->eof; /* after the client's FIN there is nothing left to drain */
    if (!c->linger) {
        conn_stop_reading(c);
    }
    pt_out_flush(c);
    if (c->state == PT_CONN_CLOSED || (c->app_busy && c->ws == NULL)) {
        return; /* the flush failed; or pt_conn_request_finished comes back here */
    }
    if (c->tls != NULL) {
        pt_out_tls_close(c); /* close_notify before the FIN (RFC 8446 6.1) */
        if (c->state == PT_CONN_CLOSED) {
            return;
        }
    }
    c->state = PT_CONN_SHUTDOWN;
    sr = malloc(sizeof(*sr));
    if (sr == NULL) {
        pt_conn_close(c);
        return;
    }
    sr->data = c;
    /* uv_shutdown waits for queued writes, so the response goes out before the FIN. */
    if (uv_shutdown(sr, &c->h.stream, on_shutdown) < 0) {
        free(sr);
        pt_conn_close(c);
    }
}

/* Answers with an error of the server's own and closes (lingering: the client may still be sending). */
void
pt_conn_reply_error(pt_conn_t *c, int status, const char *why)
{
    pt_log_info("%s:%d %d %s: %s", c->remote_addr, c->remote_port, status, pt_status_reason(status), why);
    if (pt_out_reply(c, status) == 0 && c->srv->cfg->access_log) {
        pt_log_access_refused(c->remote_addr, status);
    }
    pt_conn_end(c, true);
}

/* ------------------------------------------------------------------------------------------------------------ */
/* Reading and parsing */

static void
on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    pt_conn_t *c = h->data;

    /* Every connection reads into the loop's one buffer; only unparsed leftovers are copied out. */
    *buf = uv_buf_init(c->srv->read_buf, PT_READ_BUF_SIZE);
}

/* Tells a loop-thread streaming app that the body moved on (bytes, end, error). Workers are woken by req->cond. */
static void
conn_notify_body(pt_conn_t *c)
{
    pt_app_t *app = c->srv->app;

    if (app->on_loop && app->streams_body && c->app_busy && app->on_body != NULL) {
        app->on_body(app, &c->req);
    }
}

static void
conn_parse_error(pt_conn_t *c)
{
    const char *why;
    int status = pt_http_error(&c->http, &why);

    if (c->app_busy) {
        /* The app already has the request: it learns from the body channel; the connection is not reused. */
        pt_req_body_fail(&c->req, status == 413 ? PT_BODY_ERR_TOO_LARGE : PT_BODY_ERR_INVALID);
        c->req.keep_alive = false;
        conn_stop_reading(c);
        c->http.paused = true; /* nothing more is parsed on this connection */
        pt_log_info("%s:%d request body: %s", c->remote_addr, c->remote_port, why);
        conn_notify_body(c);
        return;
    }
    pt_conn_reply_error(c, status, why);
}

/* --limit-concurrency: a request that arrives while that many are with the app gets 503 at once, as uvicorn does,
 * rather than waiting in a queue whose wait nobody bounds. */
static bool
conn_over_limit(pt_conn_t *c)
{
    const pt_config_t *cfg = c->srv->cfg;

    return cfg->limit_concurrency > 0
        && atomic_load_explicit(&c->srv->totals->nbusy, memory_order_relaxed) >= cfg->limit_concurrency;
}

static void
conn_dispatch(pt_conn_t *c)
{
    pt_server_t *srv = c->srv;

    c->app_busy = true;
    c->state = PT_CONN_APP;
    pt_server_request_started(srv);
    c->progress = uv_now(srv->loop);
    pt_conn_set_deadline(c, srv->cfg->client_timeout);
    srv->app->on_request(srv->app, &c->req);
}

/*
 * Worker threads get a request with a body once the body is in, or once PT_BODY_HIGH of it is: a client that
 * dribbles its body then holds a connection and a buffer, never one of the few threads. ASGI awaits the body
 * without a thread; a request with Expect: 100-continue sends no body until the app reads, so it goes at once.
 */
static bool
conn_defers_dispatch(const pt_conn_t *c)
{
    const pt_request_t *req = &c->req;

    return c->srv->cfg->request_buffering && !c->srv->app->on_loop && !req->body_eof && !req->expect_continue;
}

/* Dispatches from inside a parser callback: 0, or 503 (--limit-concurrency) for the parser to answer with. */
static int
conn_dispatch_now(pt_conn_t *c)
{
    if (conn_over_limit(c)) {
        c->http.error_why = "--limit-concurrency reached";
        return 503;
    }
    conn_dispatch(c);
    return 0;
}

/*
 * Feeds bytes to the parser, dispatching requests as they complete, until the bytes run out, the parser pauses on
 * a request still in the app (the remainder goes to `rest`), or the connection fails.
 */
static void
conn_process(pt_conn_t *c, const char *data, size_t n)
{
    const char *end = data + n;
    size_t used;

    if (c->h2 == NULL && !c->sniffed) {
        switch (pt_h2_sniff(c, data, n)) {
        case PT_SNIFF_WAIT: return;
        case PT_SNIFF_H1: break;
        case PT_SNIFF_H1_KEPT:
            /* A few bytes that looked like the HTTP/2 preface, and HTTP/1.1 after all: they are parsed first. */
            conn_process_rest(c);
            if (c->state >= PT_CONN_ENDING) {
                return;
            }
            break;
        }
    }
    if (c->h2 != NULL) {
        pt_h2_feed(c->h2, data, n);
        return;
    }
    c->in_process = true;
    if (c->ws != NULL) {
        pt_ws_feed(c->ws, data, n);
        data = end;
    }
    while (data < end && c->state < PT_CONN_ENDING) {
        if (c->http.paused) {
            if (pt_buf_append(&c->rest, data, (size_t)(end - data)) < 0) {
                pt_conn_close(c);
            } else if (c->rest.len >= REST_MAX) {
                conn_stop_reading(c);
            }
            break;
        }
        switch (pt_http_execute(&c->http, data, (size_t)(end - data), &used)) {
        case PT_HTTP_MORE: data = end; break;
        case PT_HTTP_ERROR:
            conn_parse_error(c);
            data = end;
            break;
        case PT_HTTP_NOT_HTTP:
            pt_conn_end(c, false);
            data = end;
            break;
        case PT_HTTP_MESSAGE:
            data += used;
            if (c->srv->app->streams_body) {
                break; /* a streaming app has had the request since its head */
            }
            if (conn_over_limit(c)) {
                pt_conn_reply_error(c, 503, "--limit-concurrency reached");
            } else {
                conn_dispatch(c);
            }
            break;
        }
    }
    c->in_process = false;
}

/* The client half-closed (EOF). It may still read: the requests it sent are answered, then the connection ends. */
static void
conn_on_eof(pt_conn_t *c)
{
    c->eof = true;
    c->req.client_eof = true;
    if (c->h2 != NULL) {
        pt_h2_on_eof(c->h2);
        return;
    }
    if (c->ws != NULL) {
        pt_ws_on_eof(c->ws); /* a close frame came before this, or the connection ends abnormally */
        return;
    }
    if (c->app_busy) {
        conn_notify_body(c); /* an ASGI receive() waiting past the body reports http.disconnect */
        if (!c->message_done) {
            /* An incomplete body will never be complete. */
            pt_log_info("%s:%d request body: the client closed its side before the body was complete", c->remote_addr,
                        c->remote_port);
            pt_req_body_fail(&c->req, PT_BODY_ERR_GONE);
            conn_notify_body(c);
        }
        return;
    }
    if (c->state == PT_CONN_OUTPUT) {
        return; /* the requests it sent are answered once it reads the ones before */
    }
    if (c->state == PT_CONN_BODY) {
        /* Half-closed in the middle of a body: the request can never complete; the client may still read. */
        pt_conn_reply_error(c, 400, "client closed before sending the whole request body");
        return;
    }
    pt_conn_end(c, false);
}

/* A TLS connection's bytes: the handshake's go back at once; the requests' are decrypted into the loop's plaintext
 * buffer, then parsed as a plain connection's are. A failed handshake or record is the client's doing: a debug
 * line, the alert, and the connection ends. */
static void
conn_tls_read(pt_conn_t *c, const char *data, size_t len)
{
    pt_buf_t *plain = &c->srv->tls_plain;
    pt_tls_status_t st;

    plain->len = 0;
    st = pt_tls_read(c->tls, data, len, plain);
    pt_out_tls_pending(c);
    if (plain->len > 0 && c->state != PT_CONN_CLOSED) {
        conn_process(c, plain->data, plain->len);
        pt_out_flush(c);
    }
    if (st == PT_TLS_FAILED && c->state != PT_CONN_CLOSED) {
        pt_log_debug("%s:%d TLS %s", c->remote_addr, c->remote_port, pt_tls_error(c->tls));
        conn_stop_reading(c);
        pt_conn_end(c, false);
    } else if (st == PT_TLS_CLOSED && c->state != PT_CONN_CLOSED) {
        conn_stop_reading(c); /* close_notify: the client sends nothing more, as after a FIN */
        conn_on_eof(c);
    }
}

static void
on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
    pt_conn_t *c = s->data;

    if (nread > 0) {
        if (c->state == PT_CONN_APP || c->state == PT_CONN_BODY) {
            pt_conn_progress(c);
        }
        if (c->tls != NULL) {
            conn_tls_read(c, buf->base, (size_t)nread);
            return;
        }
        conn_process(c, buf->base, (size_t)nread);
        pt_out_flush(c);
        return;
    }
    if (nread == 0) {
        return;
    }
    conn_stop_reading(c);
    if (nread == UV_EOF) {
        conn_on_eof(c);
        return;
    }
    pt_log_debug("%s:%d read: %s", c->remote_addr, c->remote_port, uv_strerror((int)nread));
    pt_conn_close(c);
}

static void
conn_start_reading(pt_conn_t *c)
{
    if (!c->reading && c->state != PT_CONN_CLOSED && !c->eof) {
        c->reading = uv_read_start(&c->h.stream, on_alloc, on_read) == 0;
        if (!c->reading) {
            pt_conn_close(c);
        }
    }
}

void
pt_conn_pause_reading(pt_conn_t *c)
{
    conn_stop_reading(c);
}

/* Parses what waited in `rest` while the parser was paused (it may refill `rest`, so it is taken first). Whether
 * there was any. */
static bool
conn_process_rest(pt_conn_t *c)
{
    pt_buf_t rest = c->rest;

    if (rest.len == 0) {
        return false;
    }
    c->rest = (pt_buf_t){ 0 };
    conn_process(c, rest.data, rest.len);
    pt_buf_free(&rest);
    return true;
}

void
pt_conn_ws_started(pt_conn_t *c)
{
    conn_process_rest(c);
    conn_start_reading(c);
}

void
pt_conn_resume_reading(pt_conn_t *c)
{
    if (!c->http.paused || c->rest.len < REST_MAX) {
        conn_start_reading(c);
    }
}

void
pt_conn_origin(pt_conn_t *c, pt_request_t *req)
{
    const pt_config_t *cfg = c->srv->cfg;

    req->remote_addr = c->remote_addr;
    req->remote_port = c->remote_port;
    req->server_name = c->listener->name;
    req->server_port = c->listener->port;
    req->url_scheme = c->tls != NULL ? "https" : "http";
    req->tls = c->tls;
    if (cfg->forwarded_allow.n > 0 || cfg->forwarded_allow.any) {
        memcpy(c->client_addr, c->remote_addr, sizeof(c->client_addr));
        if (pt_forwarded_apply(&cfg->forwarded_allow, req->headers, req->nheaders, c->client_addr,
                               sizeof(c->client_addr), &req->url_scheme)
            && strcmp(c->client_addr, c->remote_addr) != 0) {
            req->remote_addr = c->client_addr;
            req->remote_port = 0; /* the proxy's port would mislead; the client's is not known */
        }
    }
}

void
pt_conn_start(pt_server_t *srv, pt_listener_t *ls, pt_conn_t *c)
{
    struct sockaddr_storage ss;
    int len = sizeof(ss);

    c->listener = ls;
    c->h.handle.data = c;
    c->timer.data = c;
    uv_timer_init(srv->loop, &c->timer);
    c->handles_open = 2;
    pt_server_add_conn(srv, c);
    pt_http_init(&c->http, &srv->parser_settings, srv->cfg, c, &c->req);
    c->state = PT_CONN_IDLE;
    c->idle_since = uv_now(c->srv->loop);
    /* TLS: the handshake runs in this state, under the header timeout, as the request head would. */
    if (ls->tls && (c->tls = pt_tls_new_current()) == NULL) {
        pt_log_error("%s: out of memory for a TLS connection", ls->url);
        pt_conn_close(c);
        return;
    }

    if (ls->is_unix) {
        strcpy(c->remote_addr, "unix");
        c->remote_port = 0;
    } else {
        uv_tcp_nodelay(&c->h.tcp, 1);
        if (uv_tcp_getpeername(&c->h.tcp, (struct sockaddr *)&ss, &len) == 0) {
            if (ss.ss_family == AF_INET6) {
                uv_ip6_name((struct sockaddr_in6 *)&ss, c->remote_addr, sizeof(c->remote_addr));
                c->remote_port = ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
            } else {
                uv_ip4_name((struct sockaddr_in *)&ss, c->remote_addr, sizeof(c->remote_addr));
                c->remote_port = ntohs(((struct sockaddr_in *)&ss)->sin_port);
            }
        }
    }
    /* A fresh connection gets the header timeout to send its first request; after that, the keep-alive one. */
    pt_conn_set_deadline(c, srv->cfg->header_timeout);
    conn_start_reading(c);
}

/* ------------------------------------------------------------------------------------------------------------ */
/* What the parser found (http.h) */

int
pt_conn_on_message_begin(pt_conn_t *c)
{
    c->state = PT_CONN_HEAD;
    /* The header timeout runs from the first byte of the request. */
    pt_conn_set_deadline(c, c->srv->cfg->header_timeout);
    return 0;
}

int
pt_conn_on_headers(pt_conn_t *c)
{
    pt_request_t *req = &c->req;
    pt_server_t *srv = c->srv;

    req->keep_alive = req->keep_alive && !srv->stopping;
    pt_conn_origin(c, req);
    pt_req_begin(req, c->eof);
    c->resp_done = false;
    c->message_done = false;

    pt_conn_rate_start(c);
    if (srv->app->websockets && !srv->stopping) { /* stopping: an upgrade is answered as HTTP, and closes */
        switch (pt_ws_classify(req)) {
        case PT_WS_NONE: break;
        case PT_WS_UPGRADE: req->websocket = true; break;
        case PT_WS_BAD_VERSION: c->http.error_why = "a WebSocket version other than 13"; return 426;
        case PT_WS_BAD_REQUEST:
            c->http.error_why =
                "a WebSocket handshake without one valid Sec-WebSocket-Key and -Version, or with a body";
            return 400;
        }
    }
    if (srv->app->streams_body && !conn_defers_dispatch(c)) {
        return conn_dispatch_now(c);
    }
    if (!req->body_eof) {
        c->state = PT_CONN_BODY;
        pt_conn_set_deadline(c, srv->cfg->client_timeout);
        if (!req->continue_sent) {
            /* The app reads the body only once it is all here, so the server asks for it now. */
            req->continue_sent = true;
            pt_out_continue(c);
        }
    }
    return 0;
}

/*
 * Body bytes for a worker waiting on them: signal it once the loop has read what the sockets had (from a prepare
 * handle, which runs before libuv polls again), not per read. A worker signalled at once preempts the loop on a
 * shared CPU after every 64 KiB read, so each piece of an upload cost two context switches and a fight over the
 * request's lock.
 */
static void
on_wake_prepare(uv_prepare_t *h)
{
    pt_server_t *srv = h->data;
    pt_conn_t *taken = pt_todo_take(&srv->wake), *c;

    uv_prepare_stop(h);
    while ((c = pt_todo_next(&srv->wake, &taken)) != NULL) {
        pt_req_wake(&c->req);
    }
}

int
pt_conn_on_body(pt_conn_t *c, const char *p, size_t n)
{
    int ask;

    pt_conn_progress(c);
    ask = pt_req_body_push(&c->req, p, n);
    if (ask < 0) {
        pt_log_error("cannot spool a request body to disk: %s", strerror(-ask));
        return 500;
    }
    if ((ask & PT_PUSH_WAKE) && pt_todo_add(&c->srv->wake, c)) {
        uv_prepare_start(&c->srv->wake_prepare, on_wake_prepare);
    }
    if (ask & PT_PUSH_PAUSE) {
        conn_stop_reading(c);
        if (c->state == PT_CONN_BODY && c->srv->app->streams_body) {
            return conn_dispatch_now(c); /* a worker's deferred request: PT_BODY_HIGH of it is here */
        }
    }
    if (c->srv->app->streams_body) {
        conn_notify_body(c);
    }
    return 0;
}

int
pt_conn_on_message(pt_conn_t *c)
{
    c->message_done = true;
    pt_req_body_end(&c->req);
    if (c->state == PT_CONN_BODY && c->srv->app->streams_body) {
        return conn_dispatch_now(c); /* a worker's deferred request: all of it is here */
    }
    if (c->srv->app->streams_body) {
        conn_notify_body(c);
    }
    return 0;
}

/* ------------------------------------------------------------------------------------------------------------ */
/* The next request */

/* After a request: the connection is reused when both sides want it and nothing went wrong. */
static bool
conn_reusable(pt_conn_t *c)
{
    pt_request_t *req = &c->req;

    /* After a half-close (EOF) the requests already received are still answered, then the connection closes.
     * Stopping: a response that went out promising keep-alive (its head was written before the stop) keeps the
     * connection for a moment, so that the request its client sends next is answered with "Connection: close"
     * instead of being lost. */
    return (req->keep_alive || c->srv->stopping) && c->resp_done && !req->resp.must_close && c->message_done
        && (!c->eof || c->rest.len > 0) && req->body_err == PT_BODY_ERR_NONE && c->state < PT_CONN_ENDING;
}

void
pt_conn_request_finished(pt_conn_t *c)
{
    if (c->state == PT_CONN_CLOSED) {
        conn_close_handles(c);
        return;
    }
    if (c->ws != NULL) {
        pt_ws_app_done(c->ws); /* closes with 1000 if the app did not, then ends once the handshake is over */
        return;
    }
    if (!conn_reusable(c)) {
        pt_conn_end(c, !c->message_done);
        return;
    }
    c->message_done = false;
    c->resp_done = false;
    c->rate_due = 0;
    conn_release_buffers(c);
    if (pt_out_queued(c) > PT_OUT_HIGH) {
        /*
         * A client pipelining requests without reading the answers: starting the next request would queue one
         * more response, without bound. The parser stays paused (what the client sends meanwhile waits in `rest`,
         * up to REST_MAX) until the client reads; out.c resumes at PT_OUT_LOW.
         */
        c->state = PT_CONN_OUTPUT;
        pt_conn_set_deadline(c, c->srv->cfg->client_timeout);
        return;
    }
    pt_conn_next_request(c);
}

void
pt_conn_next_request(pt_conn_t *c)
{
    pt_server_t *srv = c->srv;

    c->state = PT_CONN_IDLE;
    c->idle_since = uv_now(c->srv->loop);
    pt_conn_set_deadline(c, srv->stopping ? PT_SHUTDOWN_LINGER_MS / 1000.0 : srv->cfg->keep_alive_timeout);
    pt_http_resume(&c->http);
    if (c->in_process) {
        return; /* conn_process goes on with the bytes it holds */
    }
    if (conn_process_rest(c)) {
        pt_out_flush(c);
    }
    if (c->eof && c->state < PT_CONN_OUTPUT) {
        /* The client half-closed before: what it sent is all there will be. Every complete request is answered
         * (or is with the app), a partial head is dropped, a partial body is a 400 (conn_on_eof). */
        conn_on_eof(c);
        return;
    }
    if (!c->reading && !c->http.paused && c->state < PT_CONN_ENDING) {
        conn_start_reading(c);
    }
}
