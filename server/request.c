/*
 * The request's channels across threads. A worker running the app reads body bytes and hands response bytes to
 * the loop through these functions; a loop-thread app (--threads 0) uses the same calls, which then act directly.
 *
 * Worker -> loop: messages on one list, one uv_async_t (coalescing), drained whole per wake-up.
 * Loop -> worker: fields of the request under req->lock, and req->cond when the worker waits.
 */
#include <errno.h>
#include <poll.h>
#include <string.h>
#include <unistd.h>
#include <stdlib.h>
#include <sys/sendfile.h>

#include "conn.h"
#include "log.h"

typedef enum {
    MSG_OUTPUT,             /* response bytes and/or END/DONE/ABORT */
    MSG_CONTINUE,           /* send "100 Continue" */
    MSG_RESUME_READ,        /* the body buffer drained: read the socket again */
} pt_msg_kind_t;

typedef struct pt_msg_s {
    struct pt_msg_s *next;
    pt_request_t *req;
    pt_msg_kind_t kind;
    unsigned flags;
    char *data;             /* inline[] for small outputs, else a buffer taken from the worker */
    size_t len;
    char inline_data[];
} pt_msg_t;

/* Outputs up to this size travel inside the message (one allocation, the worker keeps its warm buffer). */
#define MSG_INLINE_MAX (16 * 1024)

static _Thread_local bool on_loop_thread;

void
pt_set_loop_thread(void)
{
    on_loop_thread = true;
}

bool
pt_on_loop_thread(void)
{
    return on_loop_thread;
}

/* ------------------------------------------------------------------------------------------------------------ */
/* Hand-off */

/* Up to this many consecutive output messages of one request go to the socket in one writev. */
#define GATHER_MAX 64

static bool
is_inline_output(const pt_msg_t *m)
{
    return m != NULL && m->kind == MSG_OUTPUT && m->data == m->inline_data && m->len > 0;
}

/*
 * Output whose bytes live inside the messages, starting at `m`: it and the messages right after it for the same
 * request (only the last may carry flags) are written at once. A worker streaming small chunks posts one message
 * each, and the loop usually finds several waiting. Frees the run; returns the message after it.
 */
static pt_msg_t *
output_run(pt_conn_t *c, pt_msg_t *m)
{
    uv_buf_t bufs[GATHER_MAX];
    pt_msg_t *run = m, *after;
    unsigned n = 0, flags = 0;

    for (;;) {
        bufs[n++] = uv_buf_init(m->data, (unsigned)m->len);
        flags = m->flags;
        after = m->next;
        if (flags != 0 || n == GATHER_MAX || !is_inline_output(after) || after->req != run->req) {
            break;
        }
        m = after;
    }
    pt_conn_app_outputv(c, bufs, n, flags);
    while (run != after) {
        pt_msg_t *x = run->next;

        free(run);
        run = x;
    }
    return after;
}

static void
on_handoff(uv_async_t *a)
{
    pt_server_t *srv = a->data;
    pt_msg_t *m, *next;

    uv_mutex_lock(&srv->handoff_lock);
    m = srv->handoff_head;
    srv->handoff_head = srv->handoff_tail = NULL;
    uv_mutex_unlock(&srv->handoff_lock);

    for (; m != NULL; m = next) {
        pt_conn_t *c = m->req->conn;

        next = m->next;
        if (is_inline_output(m)) {
            next = output_run(c, m);
            continue;
        }
        switch (m->kind) {
        case MSG_OUTPUT:
            /* A large output's buffer (taken from the worker), or none: flags alone. */
            pt_conn_app_output(c, m->data, m->len, m->flags, PT_OUT_OWNED);
            break;
        case MSG_CONTINUE:
            pt_conn_send_continue(c);
            break;
        case MSG_RESUME_READ:
            pt_conn_resume_reading(c);
            break;
        }
        free(m);
    }
}

int
pt_handoff_init(pt_server_t *srv)
{
    int r = uv_mutex_init(&srv->handoff_lock);

    if (r < 0) {
        return r;
    }
    r = uv_async_init(srv->loop, &srv->handoff, on_handoff);
    if (r < 0) {
        uv_mutex_destroy(&srv->handoff_lock);
        return r;
    }
    srv->handoff.data = srv;
    return 0;
}

void
pt_handoff_close(pt_server_t *srv)
{
    if (!uv_is_closing((uv_handle_t *)&srv->handoff)) {
        uv_close((uv_handle_t *)&srv->handoff, NULL);
    }
}

static void
handoff_post(pt_request_t *req, pt_msg_t *m)
{
    pt_server_t *srv = req->conn->srv;

    m->req = req;
    m->next = NULL;
    uv_mutex_lock(&srv->handoff_lock);
    if (srv->handoff_tail) {
        srv->handoff_tail->next = m;
    } else {
        srv->handoff_head = m;
    }
    srv->handoff_tail = m;
    uv_mutex_unlock(&srv->handoff_lock);
    uv_async_send(&srv->handoff);
}

static int
post_simple(pt_request_t *req, pt_msg_kind_t kind)
{
    pt_msg_t *m = calloc(1, sizeof(*m));

    if (m == NULL) {
        return -ENOMEM;
    }
    m->kind = kind;
    handoff_post(req, m);
    return 0;
}

/* ------------------------------------------------------------------------------------------------------------ */
/* Body in */

static size_t
copy_out(pt_request_t *req, char *dst, size_t n, int delim)
{
    const char *src = req->body.data + req->body_rpos;
    size_t avail = req->body.len - req->body_rpos;
    size_t k = n < avail ? n : avail;

    if (delim >= 0) {
        const char *hit = memchr(src, delim, k);

        if (hit != NULL) {
            k = (size_t)(hit - src) + 1;
        }
    }
    memcpy(dst, src, k);
    req->body_rpos += k;
    if (req->body_rpos == req->body.len) {
        req->body.len = req->body_rpos = 0;
    }
    return k;
}

static ssize_t
read_spooled(pt_request_t *req, char *dst, size_t n, int delim)
{
    uint64_t left = req->body_file_len - req->body_file_pos;
    ssize_t r;

    if (left == 0) {
        return 0;
    }
    if (n > left) {
        n = (size_t)left;
    }
    do {
        r = pread(req->body_fd, dst, n, (off_t)req->body_file_pos);
    } while (r < 0 && errno == EINTR);
    if (r <= 0) {
        pt_log_error("reading a spooled request body: %s", r < 0 ? strerror(errno) : "short file");
        return -EPIPE;
    }
    if (delim >= 0) {
        const char *hit = memchr(dst, delim, (size_t)r);

        if (hit != NULL) {
            r = hit - dst + 1;
        }
    }
    req->body_file_pos += (uint64_t)r;
    return r;
}

ssize_t
pt_req_read(pt_request_t *req, char *dst, size_t n, int delim, bool block)
{
    bool worker = !pt_on_loop_thread();
    ssize_t r;

    if (n == 0) {
        return 0;
    }
    if (!worker) {
        pt_conn_t *c = req->conn;

        if (req->body_fd >= 0) {
            return read_spooled(req, dst, n, delim);
        }
        if (req->body_rpos < req->body.len) {
            r = (ssize_t)copy_out(req, dst, n, delim);
            if (req->body_read_paused && req->body.len - req->body_rpos < PT_BODY_LOW) {
                req->body_read_paused = false;
                pt_conn_resume_reading(c);
            }
            return r;
        }
        if (req->body_eof) {
            return 0;
        }
        if (req->body_err != PT_BODY_ERR_NONE || req->gone || !c->srv->app->streams_body) {
            return -EPIPE;  /* a non-streaming loop-thread app has its whole body: this cannot happen */
        }
        if (!req->continue_sent) {
            req->continue_sent = true;
            pt_conn_send_continue(c);
        }
        return -EAGAIN;     /* on_body says when there is more */
    }
    uv_mutex_lock(&req->lock);
    for (;;) {
        if (req->body_rpos < req->body.len) {
            r = (ssize_t)copy_out(req, dst, n, delim);
            if (req->body_read_paused && req->body.len - req->body_rpos < PT_BODY_LOW) {
                req->body_read_paused = false;
                post_simple(req, MSG_RESUME_READ);
            }
            break;
        }
        if (req->body_eof) {
            r = 0;
            break;
        }
        if (req->body_err != PT_BODY_ERR_NONE || req->gone) {
            r = -EPIPE;
            break;
        }
        if (!req->continue_sent) {
            req->continue_sent = true;
            post_simple(req, MSG_CONTINUE);
        }
        if (!block) {
            r = -EAGAIN;
            break;
        }
        req->waiting = true;
        uv_cond_wait(&req->cond, &req->lock);
        req->waiting = false;
    }
    uv_mutex_unlock(&req->lock);
    return r;
}

/* ------------------------------------------------------------------------------------------------------------ */
/* Response out */

int
pt_req_send(pt_request_t *req, pt_buf_t *out, unsigned flags)
{
    pt_msg_t *m;
    bool gone;

    if (pt_on_loop_thread()) {
        gone = req->gone || req->conn->closing;
        pt_conn_app_output(req->conn, out->data, out->len, flags, PT_OUT_LOOP);
        out->len = 0;
        return gone ? -EPIPE : 0;
    }
    uv_mutex_lock(&req->lock);
    gone = req->gone;
    if (!gone) {
        req->out_pending += out->len;
    }
    uv_mutex_unlock(&req->lock);
    if (gone) {
        out->len = 0;
        if (!(flags & (PT_SEND_DONE | PT_SEND_END | PT_SEND_ABORT))) {
            return -EPIPE;
        }
    }
    m = malloc(sizeof(*m) + (out->len <= MSG_INLINE_MAX ? out->len : 0));
    if (m == NULL) {
        /* The request cannot be let go of safely without a message: there is no recovering from this. */
        pt_log_error("out of memory handing a response to the loop");
        abort();
    }
    m->kind = MSG_OUTPUT;
    m->flags = flags;
    if (out->len <= MSG_INLINE_MAX) {
        m->len = out->len;
        m->data = NULL;
        if (out->len > 0) {
            memcpy(m->inline_data, out->data, out->len);
            m->data = m->inline_data;
        }
        out->len = 0;
    } else {
        m->data = pt_buf_steal(out, &m->len);
    }
    handoff_post(req, m);
    return gone ? -EPIPE : 0;
}

bool
pt_req_must_wait(pt_request_t *req)
{
    bool wait;

    if (pt_on_loop_thread()) {
        return pt_conn_out_queued(req->conn) > PT_OUT_HIGH;
    }
    uv_mutex_lock(&req->lock);
    wait = req->out_pending > PT_OUT_HIGH && !req->gone;
    uv_mutex_unlock(&req->lock);
    return wait;
}

int
pt_req_wait_drain(pt_request_t *req)
{
    int r;

    uv_mutex_lock(&req->lock);
    while (req->out_pending > PT_OUT_LOW && !req->gone) {
        req->waiting = true;
        uv_cond_wait(&req->cond, &req->lock);
        req->waiting = false;
    }
    r = req->gone ? -EPIPE : 0;
    uv_mutex_unlock(&req->lock);
    return r;
}

bool
pt_req_body_complete(pt_request_t *req)
{
    return req->body_eof && req->body_rpos >= req->body.len
           && (req->body_fd < 0 || req->body_file_pos >= req->body_file_len);
}

pt_body_err_t
pt_req_body_error(pt_request_t *req)
{
    pt_body_err_t e;

    if (pt_on_loop_thread()) {
        return req->body_err;
    }
    uv_mutex_lock(&req->lock);
    e = req->body_err;
    uv_mutex_unlock(&req->lock);
    return e;
}

int
pt_req_error_status(pt_request_t *req)
{
    /* When the app failed because the body could not be read, the client's request is what was wrong. */
    switch (pt_req_body_error(req)) {
    case PT_BODY_ERR_TOO_LARGE:
        return 413;
    case PT_BODY_ERR_INVALID:
    case PT_BODY_ERR_GONE:
        return 400;
    case PT_BODY_ERR_TIMEOUT:
        return 408;
    default:
        return 500;
    }
}

void
pt_req_suspend(pt_request_t *req)
{
    pt_conn_suspend(req->conn);
}

bool
pt_req_gone(pt_request_t *req)
{
    bool gone;

    if (pt_on_loop_thread()) {
        return req->gone || req->conn->closing;
    }
    uv_mutex_lock(&req->lock);
    gone = req->gone;
    uv_mutex_unlock(&req->lock);
    return gone;
}

ssize_t
pt_req_sendfile(pt_request_t *req, int fd, off_t offset, size_t count)
{
    uv_os_fd_t sock;
    size_t sent = 0;
    int timeout_ms = (int)(req->conn->srv->cfg->client_timeout * 1000);

    /* Everything queued before must be on the wire first: the loop does not touch the socket meanwhile. */
    uv_mutex_lock(&req->lock);
    while (req->out_pending > 0 && !req->gone) {
        req->waiting = true;
        uv_cond_wait(&req->cond, &req->lock);
        req->waiting = false;
    }
    uv_mutex_unlock(&req->lock);
    if (pt_req_gone(req)) {
        return -EPIPE;
    }
    if (uv_fileno((uv_handle_t *)&req->conn->h.handle, &sock) < 0) {
        return -EBADF;
    }
    while (sent < count) {
        ssize_t n = sendfile(sock, fd, &offset, count - sent);

        if (n > 0) {
            sent += (size_t)n;
            continue;
        }
        if (n == 0) {
            break;              /* the file is shorter than announced */
        }
        if (errno == EINTR) {
            continue;
        }
        if (errno == EAGAIN) {
            struct pollfd p = { .fd = sock, .events = POLLOUT };
            int pr = poll(&p, 1, timeout_ms);

            if (pr == 0) {
                return -ETIMEDOUT;
            }
            if (pr < 0 && errno != EINTR) {
                return -errno;
            }
            if (pt_req_gone(req)) {
                return -EPIPE;
            }
            continue;
        }
        return -errno;
    }
    return (ssize_t)sent;
}
