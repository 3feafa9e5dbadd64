/*
 * Connections. One owner (the loop thread), one close path (conn_close -> close callbacks -> conn_free).
 *
 * A connection serves one request at a time. llhttp pauses at the end of every message; bytes that follow (pipelined
 * requests) wait in `rest` until the response to the current request is complete, so responses go out strictly in
 * order and a connection never holds more than one request plus a bounded amount of unparsed input.
 *
 * Apps that run on the loop thread (--threads 0) get the request once its body is in and answer at once; their
 * responses to pipelined requests parsed from one read are flushed together in one write. Apps on worker threads get
 * the request when its head is parsed; their output arrives as messages through srv->handoff (see request.c).
 */
#include "conn.h"

#include <errno.h>
#include <fcntl.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "listen.h"
#include "log.h"

#define READ_BUF_SIZE (64 * 1024)
#define REST_MAX (64 * 1024)        /* unparsed pipelined input kept before we stop reading */
#define LINGER_SECONDS 2.0          /* how long to drain a client's unread input before closing */
#define WBUF_KEEP (16 * 1024)       /* an idle connection keeps an output buffer at most this large */

typedef struct {
    uv_write_t wr;
    pt_conn_t *c;
    char *data;
    size_t len;
    bool from_worker;               /* counts in req.out_pending */
} pt_wreq_t;

static void conn_process(pt_conn_t *c, const char *data, size_t n);
static void conn_flush(pt_conn_t *c);
static void conn_close(pt_conn_t *c);
static void conn_end(pt_conn_t *c, bool linger);
static void conn_request_finished(pt_conn_t *c);
static void conn_start_reading(pt_conn_t *c);
static void conn_maybe_resume(pt_conn_t *c);

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
    if (uv_mutex_init(&c->req.lock) < 0) {
        free(c);
        return NULL;
    }
    if (uv_cond_init(&c->req.cond) < 0) {
        uv_mutex_destroy(&c->req.lock);
        free(c);
        return NULL;
    }
    c->req.conn = c;
    c->req.body_fd = -1;
    return c;
}

static void
body_unspool(pt_request_t *req)
{
    if (req->body_fd >= 0) {
        close(req->body_fd);
        req->body_fd = -1;
    }
    req->body_file_len = req->body_file_pos = 0;
}

/* Moves a loop-thread app's body out of memory into an unlinked temporary file. Returns 0 or -errno. */
static int
body_spool(pt_request_t *req)
{
    const char *dir = getenv("TMPDIR");
    int fd;

    if (dir == NULL || *dir == '\0') {
        dir = "/tmp";
    }
    fd = open(dir, O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
    if (fd < 0) {
        char path[4096];

        snprintf(path, sizeof(path), "%s/ponte-body-XXXXXX", dir);
        fd = mkostemp(path, O_CLOEXEC);
        if (fd < 0) {
            return -errno;
        }
        unlink(path);
    }
    req->body_fd = fd;
    req->body_file_len = req->body_file_pos = 0;
    return 0;
}

static int
body_spool_write(pt_request_t *req, const char *p, size_t n)
{
    while (n > 0) {
        ssize_t w = write(req->body_fd, p, n);

        if (w < 0) {
            if (errno == EINTR) {
                continue;
            }
            return -errno;
        }
        p += w;
        n -= (size_t)w;
        req->body_file_len += (uint64_t)w;
    }
    return 0;
}

/*
 * A connection going idle between requests gives back what only a request needs: the head arena, the header
 * tables, the body and output buffers. An idle keep-alive connection then costs its struct alone (10,000 of them
 * take 14 MiB rather than 24), and the next request takes the same sizes back from malloc's per-thread cache.
 */
static void
conn_release_buffers(pt_conn_t *c)
{
    pt_buf_free(&c->req.body);
    pt_buf_free(&c->head);
    free(c->hoff);
    free(c->hdrs);
    c->hoff = NULL;
    c->hdrs = NULL;
    c->hcap = 0;
    c->nhdr = 0;
    if (c->wbuf.len == 0) {
        pt_buf_free(&c->wbuf);
    }
}

/* ------------------------------------------------------------------------------------------------------------ */
/* To-do lists: connections the loop handles once, before it next blocks (pt_conn_todo_t). */

static pt_conn_link_t *
todo_link(const pt_conn_todo_t *t, pt_conn_t *c)
{
    return (pt_conn_link_t *)((char *)c + t->link);
}

/* Adds c unless it is on the list already. True if it was added. */
static bool
todo_add(pt_conn_todo_t *t, pt_conn_t *c)
{
    pt_conn_link_t *l = todo_link(t, c);

    if (l->on) {
        return false;
    }
    l->on = true;
    l->next = t->head;
    t->head = c;
    return true;
}

/* Takes the whole list to walk with todo_next: what is added meanwhile waits for the next turn. */
static pt_conn_t *
todo_take(pt_conn_todo_t *t)
{
    pt_conn_t *c = t->head;

    t->head = NULL;
    return c;
}

/* The next connection of a list from todo_take, off the list. */
static pt_conn_t *
todo_next(const pt_conn_todo_t *t, pt_conn_t **taken)
{
    pt_conn_t *c = *taken;

    if (c != NULL) {
        pt_conn_link_t *l = todo_link(t, c);

        *taken = l->next;
        l->on = false;
        l->next = NULL;
    }
    return c;
}

/* A connection being freed leaves the list (never while a taken list is walked: frees happen in close callbacks). */
static void
todo_remove(pt_conn_todo_t *t, pt_conn_t *c)
{
    pt_conn_t **pp = &t->head;

    if (!todo_link(t, c)->on) {
        return;
    }
    while (*pp != c) {
        pp = &todo_link(t, *pp)->next;
    }
    *pp = todo_link(t, c)->next;
}

static void
conn_free(pt_conn_t *c)
{
    body_unspool(&c->req);
    uv_mutex_destroy(&c->req.lock);
    uv_cond_destroy(&c->req.cond);
    pt_buf_free(&c->rest);
    pt_buf_free(&c->head);
    pt_buf_free(&c->wbuf);
    pt_buf_free(&c->req.body);
    free(c->hoff);
    free(c->hdrs);
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
    if (c->prev) {
        c->prev->next = c->next;
    } else {
        srv->conns = c->next;
    }
    if (c->next) {
        c->next->prev = c->prev;
    }
    srv->nconns--;
    todo_remove(&srv->drain, c);
    todo_remove(&srv->flush, c);
    todo_remove(&srv->wake, c);
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

/* Marks the client gone and wakes a worker that waits on it. */
static void
conn_mark_gone(pt_conn_t *c, pt_body_err_t why)
{
    pt_request_t *req = &c->req;

    uv_mutex_lock(&req->lock);
    req->gone = true;
    if (!req->body_eof && req->body_err == PT_BODY_ERR_NONE) {
        req->body_err = why;
    }
    if (req->waiting) {
        uv_cond_signal(&req->cond);
    }
    uv_mutex_unlock(&req->lock);
}

/* Closes now, dropping unsent output. With a request in the app, the handles close once the app lets go of it. */
static void
conn_close(pt_conn_t *c)
{
    if (c->closing) {
        return;
    }
    c->closing = true;
    c->state = PT_CONN_CLOSING;
    if (c->reading) {
        uv_read_stop(&c->h.stream);
        c->reading = false;
    }
    if (c->app_busy) {
        pt_app_t *app = c->srv->app;

        conn_mark_gone(c, PT_BODY_ERR_GONE);
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
        conn_close(c);
    }
}

static void
on_shutdown(uv_shutdown_t *sr, int status)
{
    pt_conn_t *c = sr->data;

    free(sr);
    if (status < 0 || !c->linger || c->closing) {
        conn_close(c);
        return;
    }
    /*
     * Lingering close: the client may still be sending (a body we did not read). Closing with unread input makes the
     * kernel send RST, which can destroy our response before the client reads it. Read and discard for a while.
     */
    pt_conn_set_deadline(c, LINGER_SECONDS);
    if (!c->reading) {
        c->reading = uv_read_start(&c->h.stream, c->h.stream.alloc_cb, on_linger_read) == 0;
    } else {
        uv_read_stop(&c->h.stream);
        c->reading = uv_read_start(&c->h.stream, c->h.stream.alloc_cb, on_linger_read) == 0;
    }
    if (!c->reading) {
        conn_close(c);
    }
}

/*
 * Flushes what is queued, then closes: at once, or lingering when the client may still be sending. With a request
 * still in the app it only marks the connection CLOSING; conn_request_finished calls again once the app lets go.
 */
static void
conn_end(pt_conn_t *c, bool linger)
{
    uv_shutdown_t *sr;

    if (c->closing || c->shutting) {
        return;
    }
    c->state = PT_CONN_CLOSING;
    c->linger = c->linger || linger;
    if (c->reading && !c->linger) {
        uv_read_stop(&c->h.stream);
        c->reading = false;
    }
    conn_flush(c);
    if (c->closing) {
        return;
    }
    if (c->app_busy) {
        return;                 /* conn_request_finished comes back here */
    }
    c->shutting = true;
    sr = malloc(sizeof(*sr));
    if (sr == NULL) {
        conn_close(c);
        return;
    }
    sr->data = c;
    /* uv_shutdown waits for queued writes, so the response goes out before the FIN. */
    if (uv_shutdown(sr, &c->h.stream, on_shutdown) < 0) {
        free(sr);
        conn_close(c);
    }
}

/* ------------------------------------------------------------------------------------------------------------ */
/* Timer: one per connection, its meaning set by the state. Deadlines move often; the timer is re-armed lazily. */

/* How long a just-used keep-alive connection is given, on shutdown, to send the request that may be on its way. */
#define SHUTDOWN_LINGER_MS 1000

static void on_timer(uv_timer_t *t);

void
pt_conn_set_deadline(pt_conn_t *c, double seconds)
{
    uint64_t ms = (uint64_t)(seconds * 1000);
    uint64_t deadline = uv_now(c->srv->loop) + ms;

    c->deadline = deadline;
    if (!uv_is_active((uv_handle_t *)&c->timer) || c->timer_due > deadline) {
        c->timer_due = deadline;
        uv_timer_start(&c->timer, on_timer, ms, 0);
    }
}

static void
conn_reply_error(pt_conn_t *c, int status, const char *why)
{
    pt_log_info("%s:%d %d %s: %s", c->remote_addr, c->remote_port, status, pt_status_reason(status), why);
    c->wbuf.len = 0;
    if (pt_resp_simple(&c->wbuf, status, true, pt_status_reason(status)) == 0 && c->srv->cfg->access_log) {
        pt_log_access_refused(c->remote_addr, status);
    }
    conn_end(c, true);
}

/* Whether a request in the app is held up by the client (slow body, or not reading the response). */
static bool
conn_client_stalled(pt_conn_t *c)
{
    pt_request_t *req = &c->req;
    bool stalled;

    /* Waiting for body bytes: a worker blocks on req->cond; a loop-thread app (ASGI) awaits a future instead. */
    uv_mutex_lock(&req->lock);
    stalled = ((req->waiting || c->srv->app->on_loop) && !req->body_eof && req->body_rpos == req->body.len)
              || req->out_pending > 0;
    uv_mutex_unlock(&req->lock);
    return stalled || c->inflight > 0 || c->wbuf.len > 0;
}

static void
on_timer(uv_timer_t *t)
{
    pt_conn_t *c = t->data;
    uint64_t now = uv_now(c->srv->loop);

    if (now < c->deadline) {
        c->timer_due = c->deadline;
        uv_timer_start(&c->timer, on_timer, c->deadline - now, 0);
        return;
    }
    switch (c->state) {
    case PT_CONN_IDLE:
        conn_close(c);
        break;
    case PT_CONN_HEAD:
        conn_reply_error(c, 408, "no complete request head within --header-timeout");
        break;
    case PT_CONN_BODY:
        pt_log_info("%s:%d request body stalled for --client-timeout: closing", c->remote_addr, c->remote_port);
        conn_close(c);
        break;
    case PT_CONN_APP:
        if (conn_client_stalled(c)) {
            pt_log_info("%s:%d client made no progress for --client-timeout: closing", c->remote_addr,
                        c->remote_port);
            conn_mark_gone(c, PT_BODY_ERR_TIMEOUT);
            conn_close(c);
        } else {
            pt_conn_set_deadline(c, c->srv->cfg->client_timeout);
        }
        break;
    case PT_CONN_CLOSING:
        conn_close(c);
        break;
    }
}

/* ------------------------------------------------------------------------------------------------------------ */
/* Writing */

/* The client made progress (sent body bytes, took response bytes): push its timeout back. The timer is lazy, so
 * this is one store; on_timer re-arms from the new deadline. */
static void
conn_progress(pt_conn_t *c)
{
    c->progress = uv_now(c->srv->loop);
    c->deadline = c->progress + (uint64_t)(c->srv->cfg->client_timeout * 1000);
}

static void
conn_wrote(pt_conn_t *c, size_t n, bool from_worker)
{
    pt_request_t *req = &c->req;

    conn_progress(c);
    if (from_worker) {
        uv_mutex_lock(&req->lock);
        req->out_pending -= n;
        if (req->waiting && req->out_pending <= PT_OUT_LOW) {
            uv_cond_signal(&req->cond);
        }
        uv_mutex_unlock(&req->lock);
    }
}

static void conn_after_write(pt_conn_t *c);

static void
on_write(uv_write_t *wr, int status)
{
    pt_wreq_t *w = (pt_wreq_t *)wr;
    pt_conn_t *c = w->c;

    c->inflight -= w->len;
    if (status < 0) {
        if (w->from_worker) {
            conn_wrote(c, w->len, true);   /* the bytes will never go: release the waiting worker */
        }
        free(w->data);
        free(w);
        if (status != UV_ECANCELED) {
            pt_log_debug("%s:%d write: %s", c->remote_addr, c->remote_port, uv_strerror(status));
        }
        conn_close(c);
        return;
    }
    conn_wrote(c, w->len, w->from_worker);
    free(w->data);
    free(w);
    conn_after_write(c);
}

/* Queues `data` (which the connection now owns and frees) behind what is already queued. */
static void
conn_write_owned(pt_conn_t *c, char *data, size_t len, bool from_worker)
{
    pt_wreq_t *w;
    uv_buf_t b;
    int r;

    if (c->inflight == 0) {
        b = uv_buf_init(data, (unsigned)len);
        r = uv_try_write(&c->h.stream, &b, 1);
        if (r > 0) {
            conn_wrote(c, (size_t)r, from_worker);
            if ((size_t)r == len) {
                free(data);
                return;
            }
            memmove(data, data + r, len - (size_t)r);
            len -= (size_t)r;
        } else if (r != UV_EAGAIN) {
            if (from_worker) {
                conn_wrote(c, len, true);
            }
            free(data);
            conn_close(c);
            return;
        }
    }
    w = malloc(sizeof(*w));
    if (w == NULL) {
        if (from_worker) {
            conn_wrote(c, len, true);
        }
        free(data);
        conn_close(c);
        return;
    }
    w->c = c;
    w->data = data;
    w->len = len;
    w->from_worker = from_worker;
    b = uv_buf_init(data, (unsigned)len);
    r = uv_write(&w->wr, &c->h.stream, &b, 1, on_write);
    if (r < 0) {
        if (from_worker) {
            conn_wrote(c, len, true);
        }
        free(data);
        free(w);
        conn_close(c);
        return;
    }
    c->inflight += len;
}

/* Writes wbuf: straight to the socket when nothing is queued, else behind the queue. */
static void
conn_flush(pt_conn_t *c)
{
    uv_buf_t b;
    int r;
    char *data;
    size_t len;

    if (c->wbuf.len == 0 || c->closing) {
        return;
    }
    if (c->inflight == 0) {
        b = uv_buf_init(c->wbuf.data, (unsigned)c->wbuf.len);
        r = uv_try_write(&c->h.stream, &b, 1);
        if (r > 0) {
            conn_wrote(c, (size_t)r, false);
            if ((size_t)r == c->wbuf.len) {
                c->wbuf.len = 0;
                if (c->wbuf.cap > WBUF_KEEP) {
                    pt_buf_free(&c->wbuf);
                }
                conn_maybe_resume(c);
                return;
            }
            pt_buf_consume(&c->wbuf, (size_t)r);
        } else if (r != UV_EAGAIN) {
            conn_close(c);
            return;
        }
    }
    data = pt_buf_steal(&c->wbuf, &len);
    conn_write_owned(c, data, len, false);
}

size_t
pt_conn_out_queued(pt_conn_t *c)
{
    return c->wbuf.len + c->inflight;
}

/*
 * A loop-thread app suspended on back-pressure resumes once its output drains below PT_OUT_LOW. That can happen in a
 * write callback or inside conn_flush (uv_try_write took everything); either way it resumes from an idle handle, at
 * the top of the loop, never from inside a flush its own output triggered.
 */
static void
on_drain_idle(uv_idle_t *idle)
{
    pt_server_t *srv = idle->data;
    pt_conn_t *taken = todo_take(&srv->drain), *c;

    uv_idle_stop(idle);
    while ((c = todo_next(&srv->drain, &taken)) != NULL) {
        if (c->app_busy && c->suspended && !c->closing && pt_conn_out_queued(c) <= PT_OUT_LOW) {
            c->suspended = false;
            srv->app->on_drain(srv->app, &c->req);
            conn_flush(c);
        }
    }
}

static void
conn_maybe_resume(pt_conn_t *c)
{
    pt_server_t *srv = c->srv;

    if (!c->suspended || c->closing || pt_conn_out_queued(c) > PT_OUT_LOW) {
        return;
    }
    if (todo_add(&srv->drain, c)) {
        uv_idle_start(&srv->drain_idle, on_drain_idle);
    }
}

static void
conn_after_write(pt_conn_t *c)
{
    if (!c->closing) {
        conn_maybe_resume(c);
    }
}

/* ------------------------------------------------------------------------------------------------------------ */
/* Requests */

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
conn_dispatch(pt_conn_t *c)
{
    pt_server_t *srv = c->srv;

    c->dispatched = true;
    c->app_busy = true;
    c->state = PT_CONN_APP;
    srv->nbusy++;
    srv->requests++;
    c->progress = uv_now(srv->loop);
    pt_conn_set_deadline(c, srv->cfg->client_timeout);
    srv->app->on_request(srv->app, &c->req);
}

int
pt_conn_on_headers(pt_conn_t *c)
{
    pt_request_t *req = &c->req;
    pt_server_t *srv = c->srv;

    req->start_ns = uv_hrtime();
    req->seq++;
    req->gil_wait_start_ns = req->gil_wait_run_ns = 0;
    req->remote_addr = c->remote_addr;
    req->remote_port = c->remote_port;
    req->server_name = c->listener->name;
    req->server_port = c->listener->port;
    req->url_scheme = "http";
    if (srv->cfg->forwarded_allow.n > 0 || srv->cfg->forwarded_allow.any) {
        memcpy(c->client_addr, c->remote_addr, sizeof(c->client_addr));
        if (pt_forwarded_apply(&srv->cfg->forwarded_allow, req->headers, req->nheaders, c->client_addr,
                               sizeof(c->client_addr), &req->url_scheme)
            && strcmp(c->client_addr, c->remote_addr) != 0) {
            req->remote_addr = c->client_addr;
            req->remote_port = 0;       /* the proxy's port would mislead; the client's is not known */
        }
    }
    memset(&req->resp, 0, sizeof(req->resp));
    req->app_data = NULL;
    req->body.len = 0;
    req->body_rpos = 0;
    req->body_received = 0;
    req->body_eof = !req->chunked && req->content_length <= 0;
    req->body_err = PT_BODY_ERR_NONE;
    req->body_read_paused = false;
    req->continue_sent = !req->expect_continue || req->body_eof;
    req->waiting = false;
    req->out_pending = 0;
    req->gone = false;
    req->client_eof = c->eof;
    c->resp_done = false;
    c->message_done = false;

    if (srv->app->streams_body) {
        conn_dispatch(c);
    } else if (!req->body_eof) {
        c->state = PT_CONN_BODY;
        pt_conn_set_deadline(c, srv->cfg->client_timeout);
        if (!req->continue_sent) {
            /* The app reads the body only once it is all here, so the server asks for it now. */
            pt_buf_append(&c->wbuf, "HTTP/1.1 100 Continue\r\n\r\n", 25);
            req->continue_sent = true;
            conn_flush(c);
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
    pt_conn_t *taken = todo_take(&srv->wake), *c;

    uv_prepare_stop(h);
    while ((c = todo_next(&srv->wake, &taken)) != NULL) {
        uv_mutex_lock(&c->req.lock);
        if (c->req.waiting) {
            uv_cond_signal(&c->req.cond);
        }
        uv_mutex_unlock(&c->req.lock);
    }
}

static void
conn_wake_soon(pt_conn_t *c)
{
    if (todo_add(&c->srv->wake, c)) {
        uv_prepare_start(&c->srv->wake_prepare, on_wake_prepare);
    }
}

int
pt_conn_on_body(pt_conn_t *c, const char *p, size_t n)
{
    pt_request_t *req = &c->req;
    bool streams = c->srv->app->streams_body;
    bool pause = false;

    conn_progress(c);
    if (req->body_received + n > c->srv->cfg->max_body_size) {
        c->error_status = 413;
        return -1;
    }
    if (streams) {
        uv_mutex_lock(&req->lock);
    }
    req->body_received += n;
    if (req->body_rpos > 0 && req->body_rpos == req->body.len) {
        req->body.len = req->body_rpos = 0;
    } else if (req->body_rpos > req->body.len / 2) {
        pt_buf_consume(&req->body, req->body_rpos);
        req->body_rpos = 0;
    }
    if (!streams && (req->body_fd >= 0 || req->body.len + n > PT_BODY_SPOOL)) {
        int r = req->body_fd >= 0 ? 0 : body_spool(req);

        if (r == 0 && req->body.len > req->body_rpos) {
            r = body_spool_write(req, req->body.data + req->body_rpos, req->body.len - req->body_rpos);
            req->body.len = req->body_rpos = 0;
        }
        if (r == 0) {
            r = body_spool_write(req, p, n);
        }
        if (r < 0) {
            pt_log_error("cannot spool a request body to disk: %s", strerror(-r));
            c->error_status = 500;
            return -1;
        }
        return 0;
    }
    if (!req->gone && pt_buf_append(&req->body, p, n) < 0) {
        req->body_err = PT_BODY_ERR_GONE;
    }
    if (streams) {
        if (req->body.len - req->body_rpos > PT_BODY_HIGH) {
            req->body_read_paused = pause = true;
        }
        if (req->waiting) {
            conn_wake_soon(c);
        }
        uv_mutex_unlock(&req->lock);
        if (pause && c->reading) {
            uv_read_stop(&c->h.stream);
            c->reading = false;
        }
        conn_notify_body(c);
    }
    return 0;
}

int
pt_conn_on_message(pt_conn_t *c)
{
    pt_request_t *req = &c->req;

    c->message_done = true;
    if (c->srv->app->streams_body) {
        uv_mutex_lock(&req->lock);
        req->body_eof = true;
        if (req->waiting) {
            uv_cond_signal(&req->cond);
        }
        uv_mutex_unlock(&req->lock);
        conn_notify_body(c);
    } else {
        req->body_eof = true;
    }
    return HPE_PAUSED;
}

/* The response is complete and the app has let go of the request: reuse the connection or close it. */
static void
conn_request_finished(pt_conn_t *c)
{
    pt_request_t *req = &c->req;
    pt_server_t *srv = c->srv;
    bool reuse;

    if (c->closing) {
        conn_close_handles(c);
        return;
    }
    /* After a half-close (EOF) the requests already received are still answered, then the connection closes. */
    /* Stopping: a response that went out promising keep-alive (its head was written before the stop) keeps the
     * connection for a moment, so that the request its client sends next is answered with "Connection: close"
     * instead of being lost. */
    reuse = (req->keep_alive || srv->stopping) && c->resp_done && !req->resp.must_close && c->message_done
            && (!c->eof || c->rest.len > 0) && req->body_err == PT_BODY_ERR_NONE && c->state != PT_CONN_CLOSING;
    if (!reuse) {
        conn_end(c, !c->message_done);
        return;
    }
    c->dispatched = false;
    c->message_done = false;
    c->resp_done = false;
    c->scan_cr = c->scan_seen = c->scan_done = false;
    c->scan_m = 0;
    c->state = PT_CONN_IDLE;
    c->idle_since = uv_now(c->srv->loop);
    body_unspool(req);
    conn_release_buffers(c);
    pt_conn_set_deadline(c, srv->stopping ? SHUTDOWN_LINGER_MS / 1000.0 : srv->cfg->keep_alive_timeout);
    c->paused = false;
    if (c->upgrade_pause) {
        llhttp_resume_after_upgrade(&c->parser);
        c->upgrade_pause = false;
    } else {
        llhttp_resume(&c->parser);
    }
    if (c->in_process) {
        return;                     /* conn_process goes on with the bytes it holds */
    }
    if (c->rest.len > 0) {
        pt_buf_t rest = c->rest;

        c->rest = (pt_buf_t){ 0 };
        conn_process(c, rest.data, rest.len);
        pt_buf_free(&rest);
        conn_flush(c);
    }
    if (c->eof && !c->paused && c->state == PT_CONN_IDLE) {
        conn_end(c, false);     /* the client half-closed and every request it sent is answered */
        return;
    }
    if (!c->closing && !c->reading && !c->paused && c->state != PT_CONN_CLOSING) {
        conn_start_reading(c);
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
    pt_conn_t *taken = todo_take(&srv->flush), *c;

    uv_prepare_stop(p);
    while ((c = todo_next(&srv->flush, &taken)) != NULL) {
        conn_flush(c);
    }
}

static void
conn_flush_soon(pt_conn_t *c)
{
    if (!c->closing && todo_add(&c->srv->flush, c)) {
        uv_prepare_start(&c->srv->flush_prepare, on_flush_prepare);
    }
}

/*
 * A worker's bytes still inside its messages: written now as far as the socket takes them, the rest copied into
 * one buffer and queued. Several messages go in one writev: a worker streaming small chunks would otherwise cost a
 * write, and a wake-up of the reader, per chunk.
 */
static void
conn_output_borrowed(pt_conn_t *c, const uv_buf_t *bufs, unsigned nbufs, size_t len)
{
    size_t done = 0, off = 0;
    unsigned i;
    char *copy;

    if (c->inflight == 0 && !c->closing) {
        int r = uv_try_write(&c->h.stream, bufs, nbufs);

        if (r > 0) {
            done = (size_t)r;
            conn_wrote(c, done, true);
        } else if (r != UV_EAGAIN) {
            conn_wrote(c, len, true);
            conn_close(c);
            return;
        }
    }
    if (done == len) {
        return;
    }
    copy = malloc(len - done);
    if (copy == NULL) {
        conn_wrote(c, len - done, true);
        conn_close(c);
        return;
    }
    for (i = 0; i < nbufs; i++) {
        size_t n = bufs[i].len, skip = done > n ? n : done;

        memcpy(copy + off, bufs[i].base + skip, n - skip);
        off += n - skip;
        done -= skip;
    }
    conn_write_owned(c, copy, off, true);
}

/* What the end of the app's output means for the connection: PT_SEND_END, ABORT, DONE. */
static void
conn_output_flags(pt_conn_t *c, unsigned flags)
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
        srv->nbusy--;
        if (!c->in_process) {
            conn_flush(c);
        }
        conn_request_finished(c);
    }
}

/* The app's output for the current request, on the loop thread: from a worker message or a loop-thread app. */
void
pt_conn_app_output(pt_conn_t *c, char *data, size_t len, unsigned flags, pt_out_mode_t mode)
{
    if (mode == PT_OUT_LOOP) {
        if (len > 0 && !c->closing) {
            pt_buf_append(&c->wbuf, data, len);
            if (!c->in_process && !(flags & PT_SEND_DONE)) {
                conn_flush_soon(c);     /* an asyncio task sending on its own (pipelined batches wait anyway) */
            }
        }
    } else if (len == 0 || c->closing) {
        if (len > 0) {
            conn_wrote(c, len, true);   /* never written: release a worker waiting on it */
        }
        if (mode == PT_OUT_OWNED) {
            free(data);
        }
    } else {
        conn_flush(c);      /* server bytes such as "100 Continue" go first */
        if (!c->closing) {
            conn_write_owned(c, data, len, true);
        } else {
            conn_wrote(c, len, true);
            free(data);
        }
    }
    conn_output_flags(c, flags);
}

/* Pieces of a worker's output, in order, still inside its messages (the caller frees them); `flags` ends them. */
void
pt_conn_app_outputv(pt_conn_t *c, const uv_buf_t *bufs, unsigned nbufs, unsigned flags)
{
    size_t len = 0;
    unsigned i;

    for (i = 0; i < nbufs; i++) {
        len += bufs[i].len;
    }
    if (c->closing) {
        conn_wrote(c, len, true);   /* never written: release a worker waiting on it */
    } else {
        conn_flush(c);
        conn_output_borrowed(c, bufs, nbufs, len);
    }
    conn_output_flags(c, flags);
}

void
pt_conn_suspend(pt_conn_t *c)
{
    c->suspended = true;
    if (!c->in_process) {
        conn_flush(c);
    }
}

/* ------------------------------------------------------------------------------------------------------------ */
/* Reading and parsing */

static void
on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    pt_conn_t *c = h->data;

    /* Every connection reads into the loop's one buffer; only unparsed leftovers are copied out. */
    *buf = uv_buf_init(c->srv->read_buf, READ_BUF_SIZE);
}

static void
conn_parse_error(pt_conn_t *c, llhttp_errno_t err)
{
    pt_request_t *req = &c->req;
    int status = c->error_status ? c->error_status : 400;

    if (c->app_busy) {
        /* The app already has the request: it learns from the body channel; the connection is not reused. */
        uv_mutex_lock(&req->lock);
        if (req->body_err == PT_BODY_ERR_NONE) {
            req->body_err = status == 413 ? PT_BODY_ERR_TOO_LARGE : PT_BODY_ERR_INVALID;
        }
        if (req->waiting) {
            uv_cond_signal(&req->cond);
        }
        uv_mutex_unlock(&req->lock);
        req->keep_alive = false;
        if (c->reading) {
            uv_read_stop(&c->h.stream);
            c->reading = false;
        }
        c->paused = true;       /* nothing more is parsed on this connection */
        pt_log_info("%s:%d request body: %s", c->remote_addr, c->remote_port,
                    status == 413 ? "larger than --max-body-size" : pt_http_error_reason(c, err));
        conn_notify_body(c);
        return;
    }
    if (status == 413) {
        conn_reply_error(c, 413, "request body larger than --max-body-size");
    } else if (status == 431) {
        conn_reply_error(c, 431, "request head larger than --max-header-size or too many header lines");
    } else {
        conn_reply_error(c, status, c->error_why ? c->error_why : pt_http_error_reason(c, err));
    }
}

/*
 * llhttp 8.1 (Debian 12) takes a bare CR followed by any byte as a line end in a few places, which lets a request
 * hide inside another one's head (request smuggling when a proxy parses it differently). Every CR in a request head
 * must be followed by LF: checked here, over the head bytes only, before the parser sees them.
 * Returns -1 on a bare CR.
 */
static int
head_scan(pt_conn_t *c, const char *p, size_t n)
{
    size_t i;

    for (i = 0; i < n && !c->scan_done; i++) {
        char b = p[i];

        if (c->scan_cr && b != '\n') {
            return -1;
        }
        c->scan_cr = b == '\r';
        if (b == '\r' || b == '\n') {
            if (++c->scan_m == 4 && c->scan_seen) {
                c->scan_done = true;    /* CRLF CRLF after some header bytes: the head ends here */
            }
        } else {
            c->scan_m = 0;
            c->scan_seen = true;
        }
    }
    return 0;
}

/*
 * Feeds bytes to the parser, dispatching requests as they complete, until the bytes run out, the parser pauses on
 * a request still in the app (the remainder goes to `rest`), or the connection fails.
 */
static void
conn_process(pt_conn_t *c, const char *data, size_t n)
{
    llhttp_errno_t err;
    const char *end = data + n;

    c->in_process = true;
    while (data < end && !c->closing && c->state != PT_CONN_CLOSING) {
        if (c->paused) {
            if (pt_buf_append(&c->rest, data, (size_t)(end - data)) < 0) {
                conn_close(c);
            } else if (c->rest.len >= REST_MAX && c->reading) {
                uv_read_stop(&c->h.stream);
                c->reading = false;
            }
            break;
        }
        if (!c->scan_done && head_scan(c, data, (size_t)(end - data)) < 0) {
            conn_reply_error(c, 400, "bare CR in the request head");
            break;
        }
        err = llhttp_execute(&c->parser, data, (size_t)(end - data));
        if (err == HPE_OK) {
            if (c->state == PT_CONN_IDLE) {
                /* Only blank lines between requests: bound them like a head. */
                c->idle_bytes += (size_t)(end - data);
                if (c->idle_bytes > c->srv->cfg->max_header_size) {
                    conn_reply_error(c, 400, "too many empty lines before a request");
                }
            }
            break;
        }
        if (err != HPE_PAUSED && err != HPE_PAUSED_UPGRADE) {
            conn_parse_error(c, err);
            break;
        }
        if (!c->message_done) {
            /* HPE_PAUSED_UPGRADE without a new message: what follows an Upgrade request is not HTTP. */
            conn_end(c, false);
            break;
        }
        /* Paused at the end of a message. */
        data = llhttp_get_error_pos(&c->parser);
        c->paused = true;
        c->upgrade_pause = err == HPE_PAUSED_UPGRADE;
        c->idle_bytes = 0;
        if (!c->dispatched) {
            conn_dispatch(c);
        }
    }
    c->in_process = false;
}

static void
on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
    pt_conn_t *c = s->data;

    if (nread > 0) {
        if (c->state == PT_CONN_APP || c->state == PT_CONN_BODY) {
            conn_progress(c);
        }
        conn_process(c, buf->base, (size_t)nread);
        conn_flush(c);
        return;
    }
    if (nread == 0) {
        return;
    }
    c->reading = false;
    uv_read_stop(s);
    if (nread == UV_EOF) {
        c->eof = true;
        c->req.client_eof = true;
        if (c->app_busy) {
            conn_notify_body(c);    /* an ASGI receive() waiting past the body reports http.disconnect */
            /* Half-close: the client may still read the response. An incomplete body never will be complete. */
            if (!c->message_done) {
                pt_request_t *req = &c->req;

                uv_mutex_lock(&req->lock);
                if (req->body_err == PT_BODY_ERR_NONE) {
                    req->body_err = PT_BODY_ERR_GONE;
                }
                if (req->waiting) {
                    uv_cond_signal(&req->cond);
                }
                uv_mutex_unlock(&req->lock);
                conn_notify_body(c);
            }
            return;
        }
        if (c->state == PT_CONN_BODY) {
            /* Half-closed in the middle of a body: the request can never complete; the client may still read. */
            conn_reply_error(c, 400, "client closed before sending the whole request body");
            return;
        }
        conn_end(c, false);
        return;
    }
    pt_log_debug("%s:%d read: %s", c->remote_addr, c->remote_port, uv_strerror((int)nread));
    conn_close(c);
}

static void
conn_start_reading(pt_conn_t *c)
{
    if (!c->reading && !c->closing && !c->eof) {
        c->reading = uv_read_start(&c->h.stream, on_alloc, on_read) == 0;
        if (!c->reading) {
            conn_close(c);
        }
    }
}

/* The app consumed body bytes below the low-water mark: read again. */
void
pt_conn_resume_reading(pt_conn_t *c)
{
    if (!c->paused || c->rest.len < REST_MAX) {
        conn_start_reading(c);
    }
}

/* A worker asked for "100 Continue" (its app started reading the body). */
void
pt_conn_send_continue(pt_conn_t *c)
{
    if (!c->closing && !c->req.resp.head_done) {
        pt_buf_append(&c->wbuf, "HTTP/1.1 100 Continue\r\n\r\n", 25);
        conn_flush(c);
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
    c->next = srv->conns;
    if (srv->conns) {
        srv->conns->prev = c;
    }
    srv->conns = c;
    srv->nconns++;
    pt_http_reset(c);
    c->state = PT_CONN_IDLE;
    c->idle_since = uv_now(c->srv->loop);

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
/* Server */

int
pt_server_init(pt_server_t *srv, uv_loop_t *loop, const pt_config_t *cfg, pt_app_t *app)
{
    memset(srv, 0, sizeof(*srv));
    srv->loop = loop;
    srv->cfg = cfg;
    srv->app = app;
    pt_http_settings_init(&srv->parser_settings);
    srv->read_buf = malloc(READ_BUF_SIZE);
    if (srv->read_buf == NULL) {
        return UV_ENOMEM;
    }
    srv->drain.link = offsetof(pt_conn_t, drain_link);
    srv->flush.link = offsetof(pt_conn_t, flush_link);
    srv->wake.link = offsetof(pt_conn_t, wake_link);
    uv_idle_init(loop, &srv->drain_idle);
    srv->drain_idle.data = srv;
    uv_prepare_init(loop, &srv->flush_prepare);
    srv->flush_prepare.data = srv;
    uv_prepare_init(loop, &srv->wake_prepare);
    srv->wake_prepare.data = srv;
    return pt_handoff_init(srv);
}

void
pt_server_close(pt_server_t *srv)
{
    pt_handoff_close(srv);
    if (!uv_is_closing((uv_handle_t *)&srv->drain_idle)) {
        uv_close((uv_handle_t *)&srv->drain_idle, NULL);
    }
    if (!uv_is_closing((uv_handle_t *)&srv->flush_prepare)) {
        uv_close((uv_handle_t *)&srv->flush_prepare, NULL);
    }
    if (!uv_is_closing((uv_handle_t *)&srv->wake_prepare)) {
        uv_close((uv_handle_t *)&srv->wake_prepare, NULL);
    }
    free(srv->read_buf);
    srv->read_buf = NULL;
}

void
pt_server_shutdown(pt_server_t *srv)
{
    pt_conn_t *c, *next;
    uint64_t now = uv_now(srv->loop);

    srv->stopping = true;
    for (c = srv->conns; c != NULL; c = next) {
        next = c->next;
        if (c->state == PT_CONN_IDLE && !c->app_busy) {
            /* Closing a connection the client is about to reuse loses its next request (RFC 9112 §9.6): wrk and
             * most clients do not retry. A quiet one closes now; a busy one gets its next answer with
             * "Connection: close" (new requests see srv->stopping), or closes when it stays quiet. */
            if (now - c->idle_since >= SHUTDOWN_LINGER_MS) {
                conn_close(c);
            } else {
                pt_conn_set_deadline(c, (double)(SHUTDOWN_LINGER_MS - (now - c->idle_since)) / 1000.0);
            }
        } else {
            /* Answer the request in progress with "Connection: close". */
            c->req.keep_alive = false;
        }
    }
    if (srv->nconns == 0 && srv->on_idle) {
        srv->on_idle(srv);
    }
}

pt_request_t *
pt_server_stuck_request(pt_server_t *srv, uint64_t ms, uint64_t *stuck_ms)
{
    uint64_t now = uv_now(srv->loop);
    pt_conn_t *c, *worst = NULL;

    for (c = srv->conns; c != NULL; c = c->next) {
        if (c->app_busy && now - c->progress >= ms && (worst == NULL || c->progress < worst->progress)) {
            worst = c;
        }
    }
    if (worst == NULL) {
        return NULL;
    }
    *stuck_ms = now - worst->progress;
    return &worst->req;
}

void
pt_server_abort_all(pt_server_t *srv)
{
    pt_conn_t *c, *next;

    for (c = srv->conns; c != NULL; c = next) {
        next = c->next;
        conn_close(c);
    }
}
