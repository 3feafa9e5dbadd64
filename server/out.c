/*
 * A connection's write side. Bytes go to the socket with uv_try_write when nothing is queued, and what the socket
 * does not take waits in uv_write requests (`inflight`). A loop-thread app's output is batched in `wbuf`: its
 * responses to pipelined requests parsed from one read, or the chunks an asyncio task sent in one turn, go out in
 * one write. A worker's output arrives as messages (handoff.c); their bytes count in req->out_pending until written,
 * which is what the worker's back-pressure waits on.
 *
 * On a TLS connection every write is encrypted first (tls.c), and what goes to the socket is records, not the
 * response's bytes: a write request counts the response bytes it carries (`counted`), so that back-pressure and a
 * worker's wait still count the response. Records only go out whole and in order: nothing overtakes a queued write.
 */
#include "out.h"

#include <stdlib.h>
#include <string.h>

#include "h2.h"
#include "log.h"
#include "tls.h"
#include "ws.h"

#define WBUF_KEEP (16 * 1024) /* an idle connection keeps an output buffer at most this large */

typedef struct {
    uv_write_t wr;
    pt_conn_t *c;
    char *data;
    size_t len;
    size_t counted;   /* the response bytes it carries: len, or with TLS the plaintext of its records */
    bool from_worker; /* counts in req.out_pending */
} pt_wreq_t;

static void out_maybe_resume(pt_conn_t *c);

/* n bytes reached the socket (or never will): the client made progress, and a waiting worker may go on. */
static void
out_wrote(pt_conn_t *c, size_t n, bool from_worker)
{
    pt_conn_progress(c);
    if (from_worker) {
        pt_req_wrote(&c->req, n);
    }
}

static void
on_write(uv_write_t *wr, int status)
{
    pt_wreq_t *w = (pt_wreq_t *)wr;
    pt_conn_t *c = w->c;

    c->inflight -= w->counted;
    c->writes--;
    if (status < 0) {
        if (w->from_worker) {
            out_wrote(c, w->counted, true); /* the bytes will never go: release the waiting worker */
        }
        free(w->data);
        free(w);
        if (status != UV_ECANCELED) {
            pt_log_debug("%s:%d write: %s", c->remote_addr, c->remote_port, uv_strerror(status));
        }
        pt_conn_close(c);
        return;
    }
    out_wrote(c, w->counted, w->from_worker);
    free(w->data);
    free(w);
    if (c->state != PT_CONN_CLOSED) {
        out_maybe_resume(c);
    }
}

/* Gives up on `len` bytes that will never be written: a worker waiting on them is released; then closes. */
static void
out_fail(pt_conn_t *c, char *data, size_t len, bool from_worker)
{
    if (from_worker) {
        out_wrote(c, len, true);
    }
    free(data);
    pt_conn_close(c);
}

/* A uv_write of `data` (owned, freed when written), standing for `counted` response bytes. */
static void
out_queue(pt_conn_t *c, char *data, size_t len, size_t counted, bool from_worker)
{
    pt_wreq_t *w = malloc(sizeof(*w));
    uv_buf_t b = uv_buf_init(data, (unsigned)len);

    if (w == NULL) {
        out_fail(c, data, counted, from_worker);
        return;
    }
    w->c = c;
    w->data = data;
    w->len = len;
    w->counted = counted;
    w->from_worker = from_worker;
    if (uv_write(&w->wr, &c->h.stream, &b, 1, on_write) < 0) {
        free(w);
        out_fail(c, data, counted, from_worker);
        return;
    }
    c->inflight += counted;
    c->writes++;
}

/* The TLS records waiting in the connection's TLS output, standing for `counted` response bytes: written at once as
 * far as the socket takes them when nothing is queued, the rest taken out and queued. They count as written once
 * all of them are. */
static void
out_write_records(pt_conn_t *c, size_t counted, bool from_worker)
{
    pt_buf_t *records = pt_tls_output(c->tls);
    char *data;
    size_t len;

    if (c->writes == 0 && records->len > 0) {
        uv_buf_t b = uv_buf_init(records->data, (unsigned)records->len);
        int r = uv_try_write(&c->h.stream, &b, 1);

        if ((size_t)r == records->len) {
            records->len = 0; /* the buffer stays for the next response */
            out_wrote(c, counted, from_worker);
            return;
        }
        if (r > 0) {
            pt_buf_consume(records, (size_t)r);
        } else if (r != UV_EAGAIN) {
            records->len = 0;
            out_fail(c, NULL, counted, from_worker);
            return;
        }
    }
    if (records->len == 0) {
        out_wrote(c, counted, from_worker);
        return;
    }
    data = pt_buf_steal(records, &len);
    out_queue(c, data, len, counted, from_worker);
}

/* Encrypts `len` response bytes, in bufs, and writes the records. */
static void
out_write_tls(pt_conn_t *c, const uv_buf_t *bufs, unsigned nbufs, size_t len, bool from_worker)
{
    if (pt_tls_write(c->tls, bufs, nbufs) < 0) {
        pt_log_debug("%s:%d TLS: %s", c->remote_addr, c->remote_port, pt_tls_error(c->tls));
        pt_tls_output(c->tls)->len = 0;
        out_fail(c, NULL, len, from_worker);
        return;
    }
    out_write_records(c, len, from_worker);
}

void
pt_out_tls_pending(pt_conn_t *c)
{
    if (pt_tls_output(c->tls)->len > 0 && c->state != PT_CONN_CLOSED) {
        out_write_records(c, 0, false); /* the handshake's records, an alert: no response bytes */
    }
}

void
pt_out_tls_close(pt_conn_t *c)
{
    pt_tls_close(c->tls);
    pt_out_tls_pending(c);
}

/* Queues `data` (which the connection now owns and frees) behind what is already queued. */
static void
out_write_owned(pt_conn_t *c, char *data, size_t len, bool from_worker)
{
    uv_buf_t b;
    int r;

    if (c->tls != NULL) {
        b = uv_buf_init(data, (unsigned)len);
        out_write_tls(c, &b, 1, len, from_worker);
        free(data);
        return;
    }
    if (c->writes == 0) {
        b = uv_buf_init(data, (unsigned)len);
        r = uv_try_write(&c->h.stream, &b, 1);
        if (r > 0) {
            out_wrote(c, (size_t)r, from_worker);
            if ((size_t)r == len) {
                free(data);
                return;
            }
            memmove(data, data + r, len - (size_t)r);
            len -= (size_t)r;
        } else if (r != UV_EAGAIN) {
            out_fail(c, data, len, from_worker);
            return;
        }
    }
    out_queue(c, data, len, len, from_worker);
}

void
pt_out_flush(pt_conn_t *c)
{
    uv_buf_t b;
    int r;
    char *data;
    size_t len;

    if (c->wbuf.len == 0 || c->state == PT_CONN_CLOSED) {
        return;
    }
    if (c->writes == 0 && c->tls == NULL) {
        b = uv_buf_init(c->wbuf.data, (unsigned)c->wbuf.len);
        r = uv_try_write(&c->h.stream, &b, 1);
        if (r > 0) {
            out_wrote(c, (size_t)r, false);
            if ((size_t)r == c->wbuf.len) {
                c->wbuf.len = 0;
                if (c->wbuf.cap > WBUF_KEEP) {
                    pt_buf_free(&c->wbuf);
                }
                out_maybe_resume(c);
                return;
            }
            pt_buf_consume(&c->wbuf, (size_t)r);
        } else if (r != UV_EAGAIN) {
            pt_conn_close(c);
            return;
        }
    }
    data = pt_buf_steal(&c->wbuf, &len);
    out_write_owned(c, data, len, false);
}

size_t
pt_out_queued(pt_conn_t *c)
{
    return c->wbuf.len + c->inflight;
}

/*
 * A worker's bytes still inside its messages: written now as far as the socket takes them, the rest copied into
 * one buffer and queued. Several messages go in one writev: a worker streaming small chunks would otherwise cost a
 * write, and a wake-up of the reader, per chunk.
 */
static void
out_write_borrowed(pt_conn_t *c, const uv_buf_t *bufs, unsigned nbufs, size_t len)
{
    size_t done = 0, off = 0;
    unsigned i;
    char *copy;

    if (c->tls != NULL) {
        if (c->state != PT_CONN_CLOSED) {
            out_write_tls(c, bufs, nbufs, len, true);
        } else {
            out_fail(c, NULL, len, true);
        }
        return;
    }
    if (c->writes == 0 && c->state != PT_CONN_CLOSED) {
        int r = uv_try_write(&c->h.stream, bufs, nbufs);

        if (r > 0) {
            done = (size_t)r;
            out_wrote(c, done, true);
        } else if (r != UV_EAGAIN) {
            out_fail(c, NULL, len, true);
            return;
        }
    }
    if (done == len) {
        return;
    }
    copy = malloc(len - done);
    if (copy == NULL) {
        out_fail(c, NULL, len - done, true);
        return;
    }
    for (i = 0; i < nbufs; i++) {
        size_t n = bufs[i].len, skip = done > n ? n : done;

        memcpy(copy + off, bufs[i].base + skip, n - skip);
        off += n - skip;
        done -= skip;
    }
    out_write_owned(c, copy, off, true);
}

/* ------------------------------------------------------------------------------------------------------------ */
/* Back-pressure */

/*
 * A loop-thread app suspended on back-pressure resumes once its output drains below PT_OUT_LOW, and so does a
 * connection whose next request waits for the client to read the responses before it (PT_CONN_OUTPUT). That can
 * happen in a write callback or inside pt_out_flush (uv_try_write took everything); either way it resumes from an
 * idle handle, at the top of the loop, never from inside a flush its own output triggered.
 */
static void
on_drain_idle(uv_idle_t *idle)
{
    pt_server_t *srv = idle->data;
    pt_conn_t *taken = pt_todo_take(&srv->drain), *c;

    uv_idle_stop(idle);
    while ((c = pt_todo_next(&srv->drain, &taken)) != NULL) {
        if (c->h2 != NULL) {
            if (c->state != PT_CONN_CLOSED) {
                pt_h2_on_drain(c->h2); /* its streams' apps, and the frames held back */
            }
            continue;
        }
        if (pt_out_queued(c) > PT_OUT_LOW) {
            continue;
        }
        if (c->app_busy && c->suspended && c->state != PT_CONN_CLOSED) {
            c->suspended = false;
            srv->app->on_drain(srv->app, &c->req);
            pt_out_flush(c);
        } else if (c->state == PT_CONN_OUTPUT) {
            pt_conn_next_request(c);
        }
    }
}

/* Output drained: a suspended app, or a next request held back by the responses before it, may go on. */
static void
out_maybe_resume(pt_conn_t *c)
{
    bool waits = c->suspended || c->state == PT_CONN_OUTPUT || (c->h2 != NULL && pt_h2_wants_drain(c->h2));

    if (waits && c->state != PT_CONN_CLOSED && pt_out_queued(c) <= PT_OUT_LOW) {
        pt_out_drain_soon(c);
    }
}

void
pt_out_drain_soon(pt_conn_t *c)
{
    if (pt_todo_add(&c->srv->drain, c)) {
        uv_idle_start(&c->srv->drain_idle, on_drain_idle);
    }
}

void
pt_out_suspend(pt_conn_t *c)
{
    c->suspended = true;
    if (!c->in_process) {
        pt_out_flush(c);
    }
}

/*
 * An asyncio task's send() lands here while Python runs; writing each piece at once costs a syscall per send (a
 * streamed response of 16 chunks: 16 writes). Instead the connection is queued and written once when the loop
 * turns (a prepare handle runs just before libuv polls, which is when asyncio's select() yields): every chunk sent
 * meanwhile goes out in that one write, as uvloop's transports do. Back-pressure still applies: pt_req_must_wait
 * counts the queued bytes, and suspending flushes at once.
 */
static void
on_flush_prepare(uv_prepare_t *p)
{
    pt_server_t *srv = p->data;
    pt_conn_t *taken = pt_todo_take(&srv->flush), *c;

    uv_prepare_stop(p);
    while ((c = pt_todo_next(&srv->flush, &taken)) != NULL) {
        if (c->h2 != NULL) {
            pt_h2_send(c->h2); /* the frames the streams' output made, then the flush */
        } else {
            pt_out_flush(c);
        }
    }
}

void
pt_out_soon(pt_conn_t *c)
{
    if (c->state != PT_CONN_CLOSED && pt_todo_add(&c->srv->flush, c)) {
        uv_prepare_start(&c->srv->flush_prepare, on_flush_prepare);
    }
}

/* ------------------------------------------------------------------------------------------------------------ */
/* The app's output */

/* What the end of the app's output means for the connection: PT_SEND_END, ABORT, DONE. */
static void
out_app_flags(pt_conn_t *c, unsigned flags)
{
    pt_request_t *req = &c->req;
    pt_server_t *srv = c->srv;

    if (flags & PT_SEND_END) {
        c->resp_done = true;
        if (srv->cfg->access_log) {
            pt_log_access(req, req->resp.status, req->resp.body_bytes, uv_hrtime());
        }
    }
    if (flags & PT_SEND_ABORT) {
        req->resp.must_close = true;
        c->resp_done = true;
    }
    if (flags & PT_SEND_DONE) {
        c->app_busy = false;
        c->suspended = false;
        pt_server_request_ended(srv);
        if (!c->in_process) {
            pt_out_flush(c);
        }
        pt_conn_request_finished(c);
    }
}

void
pt_out_app(pt_conn_t *c, char *data, size_t len, unsigned flags, pt_out_mode_t mode)
{
    if (mode == PT_OUT_LOOP) {
        if (len > 0 && c->state != PT_CONN_CLOSED) {
            pt_buf_append(&c->wbuf, data, len);
            if (!c->in_process && !(flags & PT_SEND_DONE)) {
                pt_out_soon(c); /* an asyncio task sending on its own (pipelined batches wait anyway) */
            }
        }
    } else if (len == 0 || c->state == PT_CONN_CLOSED) {
        if (len > 0) {
            out_wrote(c, len, true); /* never written: release a worker waiting on it */
        }
        free(data);
    } else {
        pt_out_flush(c); /* server bytes such as "100 Continue" go first */
        if (c->state != PT_CONN_CLOSED) {
            out_write_owned(c, data, len, true);
        } else {
            out_wrote(c, len, true);
            free(data);
        }
    }
    out_app_flags(c, flags);
}

void
pt_out_appv(pt_conn_t *c, const uv_buf_t *bufs, unsigned nbufs, unsigned flags)
{
    size_t len = 0;
    unsigned i;

    for (i = 0; i < nbufs; i++) {
        len += bufs[i].len;
    }
    if (c->state == PT_CONN_CLOSED) {
        out_wrote(c, len, true); /* never written: release a worker waiting on it */
    } else {
        pt_out_flush(c);
        out_write_borrowed(c, bufs, nbufs, len);
    }
    out_app_flags(c, flags);
}

/* ------------------------------------------------------------------------------------------------------------ */
/* The server's own bytes */

void
pt_out_continue(pt_conn_t *c)
{
    /* HTTP/2's is a stream's (pt_h2_continue). */
    if (c->state != PT_CONN_CLOSED && !c->req.resp.head_done) {
        pt_buf_append(&c->wbuf, "HTTP/1.1 100 Continue\r\n\r\n", 25);
        pt_out_flush(c);
    }
}

int
pt_out_reply(pt_conn_t *c, int status)
{
    c->wbuf.len = 0;
    if (status == 426) {
        return pt_ws_reply_version(&c->wbuf); /* the only 426: a WebSocket version this server does not speak */
    }
    return pt_resp_simple(&c->wbuf, status, true, pt_http_is_head(&c->http) ? "" : pt_status_reason(status));
}

void
pt_out_release(pt_conn_t *c)
{
    if (c->wbuf.len == 0) {
        pt_buf_free(&c->wbuf);
    }
}
