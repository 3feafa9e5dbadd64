/*
 * The request's channels across threads. A worker running the app reads body bytes and hands response bytes to
 * the loop through these functions; a loop-thread app (--threads 0, ASGI) uses the same calls, which then act
 * directly. The loop's side of the same channels is the last section, so that req->lock is taken in this file only.
 *
 * Worker -> loop: messages (handoff.c).
 * Loop -> worker: fields of the request under req->lock, and req->cond when the worker waits.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/sendfile.h>
#include <unistd.h>

#include "conn.h"
#include "h2.h"
#include "handoff.h"
#include "log.h"
#include "out.h"

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
/* Where a loop-side action goes: the connection (HTTP/1.x), or the request's stream (HTTP/2) */

void
pt_req_loop_resume_reading(pt_request_t *req)
{
    if (req->h2 != NULL) {
        pt_h2_resume_body(req->h2);
    } else {
        pt_conn_resume_reading(req->conn);
    }
}

void
pt_req_loop_continue(pt_request_t *req)
{
    if (req->h2 != NULL) {
        pt_h2_continue(req->h2);
    } else {
        pt_out_continue(req->conn);
    }
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
        if (req->body_fd >= 0) {
            return read_spooled(req, dst, n, delim);
        }
        if (req->body_rpos < req->body.len) {
            r = (ssize_t)copy_out(req, dst, n, delim);
            if (req->body_read_paused && req->body.len - req->body_rpos < PT_BODY_LOW) {
                req->body_read_paused = false;
                pt_req_loop_resume_reading(req);
            }
            return r;
        }
        if (req->body_eof) {
            return 0;
        }
        if (req->body_err != PT_BODY_ERR_NONE || req->gone || !req->conn->srv->app->streams_body) {
            return -EPIPE; /* a non-streaming loop-thread app has its whole body: this cannot happen */
        }
        if (!req->continue_sent) {
            req->continue_sent = true;
            pt_req_loop_continue(req);
        }
        return -EAGAIN; /* on_body says when there is more */
    }
    uv_mutex_lock(&req->lock);
    for (;;) {
        if (req->body_rpos < req->body.len) {
            r = (ssize_t)copy_out(req, dst, n, delim);
            if (req->body_read_paused && req->body.len - req->body_rpos < PT_BODY_LOW) {
                req->body_read_paused = false;
                pt_handoff_post(req, PT_MSG_RESUME_READ);
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
            pt_handoff_post(req, PT_MSG_CONTINUE);
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
    bool gone;

    if (pt_on_loop_thread()) {
        gone = req->gone || req->conn->state == PT_CONN_CLOSED;
        if (req->h2 != NULL) {
            pt_h2_app_output(req->h2, out->data, out->len, flags, PT_OUT_LOOP);
        } else {
            pt_out_app(req->conn, out->data, out->len, flags, PT_OUT_LOOP);
        }
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
    pt_handoff_output(req, out, flags);
    return gone ? -EPIPE : 0;
}

bool
pt_req_must_wait(pt_request_t *req)
{
    bool wait;

    if (pt_on_loop_thread()) {
        return (req->h2 != NULL ? pt_h2_queued(req->h2) : pt_out_queued(req->conn)) > PT_OUT_HIGH;
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
    case PT_BODY_ERR_TOO_LARGE: return 413;
    case PT_BODY_ERR_INVALID:
    case PT_BODY_ERR_GONE: return 400;
    case PT_BODY_ERR_TIMEOUT: return 408;
    default: return 500;
    }
}

void
pt_req_suspend(pt_request_t *req)
{
    if (req->h2 != NULL) {
        pt_h2_suspend(req->h2);
    } else {
        pt_out_suspend(req->conn);
    }
}

bool
pt_req_gone(pt_request_t *req)
{
    bool gone;

    if (pt_on_loop_thread()) {
        return req->gone || req->conn->state == PT_CONN_CLOSED;
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
            break; /* the file is shorter than announced */
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

/* ------------------------------------------------------------------------------------------------------------ */
/* The loop's side */

/* Whether a worker may be reading the body (the app streams it): then the loop's updates take the lock. */
static bool
shared_with_worker(const pt_request_t *req)
{
    return req->conn->srv->app->streams_body;
}

int
pt_req_init(pt_request_t *req, pt_conn_t *conn)
{
    int r = uv_mutex_init(&req->lock);

    if (r < 0) {
        return r;
    }
    r = uv_cond_init(&req->cond);
    if (r < 0) {
        uv_mutex_destroy(&req->lock);
        return r;
    }
    req->conn = conn;
    req->body_fd = -1;
    return 0;
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

void
pt_req_destroy(pt_request_t *req)
{
    body_unspool(req);
    uv_mutex_destroy(&req->lock);
    uv_cond_destroy(&req->cond);
    pt_buf_free(&req->body);
}

void
pt_req_begin(pt_request_t *req, bool client_eof)
{
    req->start_ns = uv_hrtime();
    req->seq++;
    req->gil_wait_start_ns = req->gil_wait_run_ns = 0;
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
    req->client_eof = client_eof;
    req->websocket = false;
}

void
pt_req_release(pt_request_t *req)
{
    body_unspool(req);
    pt_buf_free(&req->body);
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

/* A loop-thread app that gets its whole body at once: past PT_BODY_SPOOL the body goes to a file. 0 or -errno. */
static int
body_spool_push(pt_request_t *req, const char *p, size_t n)
{
    int r = req->body_fd >= 0 ? 0 : body_spool(req);

    if (r == 0 && req->body.len > req->body_rpos) {
        r = body_spool_write(req, req->body.data + req->body_rpos, req->body.len - req->body_rpos);
        req->body.len = req->body_rpos = 0;
    }
    if (r == 0) {
        r = body_spool_write(req, p, n);
    }
    return r;
}

int
pt_req_body_push(pt_request_t *req, const char *p, size_t n)
{
    bool shared = shared_with_worker(req);
    int ask = 0;

    if (shared) {
        uv_mutex_lock(&req->lock);
    }
    req->body_received += n;
    if (req->body_rpos > 0 && req->body_rpos == req->body.len) {
        req->body.len = req->body_rpos = 0;
    } else if (req->body_rpos > req->body.len / 2) {
        pt_buf_consume(&req->body, req->body_rpos);
        req->body_rpos = 0;
    }
    if (!shared && (req->body_fd >= 0 || req->body.len + n > PT_BODY_SPOOL)) {
        return body_spool_push(req, p, n);
    }
    if (!req->gone && pt_buf_append(&req->body, p, n) < 0) {
        req->body_err = PT_BODY_ERR_GONE;
    }
    if (shared) {
        if (req->body.len - req->body_rpos > PT_BODY_HIGH) {
            req->body_read_paused = true;
            ask |= PT_PUSH_PAUSE;
        }
        if (req->waiting) {
            ask |= PT_PUSH_WAKE;
        }
        uv_mutex_unlock(&req->lock);
    }
    return ask;
}

void
pt_req_body_end(pt_request_t *req)
{
    if (!shared_with_worker(req)) {
        req->body_eof = true;
        return;
    }
    uv_mutex_lock(&req->lock);
    req->body_eof = true;
    if (req->waiting) {
        uv_cond_signal(&req->cond);
    }
    uv_mutex_unlock(&req->lock);
}

void
pt_req_body_fail(pt_request_t *req, pt_body_err_t why)
{
    uv_mutex_lock(&req->lock);
    if (req->body_err == PT_BODY_ERR_NONE) {
        req->body_err = why;
    }
    if (req->waiting) {
        uv_cond_signal(&req->cond);
    }
    uv_mutex_unlock(&req->lock);
}

void
pt_req_client_gone(pt_request_t *req, pt_body_err_t why)
{
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

void
pt_req_wake(pt_request_t *req)
{
    uv_mutex_lock(&req->lock);
    if (req->waiting) {
        uv_cond_signal(&req->cond);
    }
    uv_mutex_unlock(&req->lock);
}

void
pt_req_wrote(pt_request_t *req, size_t n)
{
    uv_mutex_lock(&req->lock);
    req->out_pending -= n;
    if (req->waiting && req->out_pending <= PT_OUT_LOW) {
        uv_cond_signal(&req->cond);
    }
    uv_mutex_unlock(&req->lock);
}

bool
pt_req_waits_on_client(pt_request_t *req, bool app_on_loop)
{
    bool waits;

    /* Waiting for body bytes: a worker blocks on req->cond; a loop-thread app (ASGI) awaits a future instead. */
    uv_mutex_lock(&req->lock);
    waits = ((req->waiting || app_on_loop) && !req->body_eof && req->body_rpos == req->body.len)
        || req->out_pending > 0;
    uv_mutex_unlock(&req->lock);
    return waits;
}
