/*
 * Worker -> loop messages. A small output travels inside its message (one allocation; the worker keeps its warm
 * buffer); a large one hands over the worker's buffer. The loop writes a run of one request's small outputs with
 * one writev.
 */
#include "handoff.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "conn.h"
#include "h2.h"
#include "log.h"
#include "out.h"

typedef struct pt_msg_s {
    struct pt_msg_s *next;
    pt_request_t *req;
    pt_msg_kind_t kind;
    unsigned flags;
    char *data; /* inline_data for small outputs, else a buffer taken from the worker */
    size_t len;
    char inline_data[];
} pt_msg_t;

/* Outputs up to this size travel inside the message. */
#define MSG_INLINE_MAX (16 * 1024)
/* Up to this many consecutive output messages of one request go to the socket in one writev. */
#define GATHER_MAX 64

static bool
is_inline_output(const pt_msg_t *m)
{
    return m != NULL && m->kind == PT_MSG_OUTPUT && m->data == m->inline_data && m->len > 0;
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
    if (run->req->h2 != NULL) {
        pt_h2_app_outputv(run->req->h2, bufs, n, flags);
    } else {
        pt_out_appv(c, bufs, n, flags);
    }
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
        case PT_MSG_OUTPUT:
            /* A large output's buffer (taken from the worker), or none: flags alone. */
            if (m->req->h2 != NULL) {
                pt_h2_app_output(m->req->h2, m->data, m->len, m->flags, PT_OUT_OWNED);
            } else {
                pt_out_app(c, m->data, m->len, m->flags, PT_OUT_OWNED);
            }
            break;
        case PT_MSG_CONTINUE: pt_req_loop_continue(m->req); break;
        case PT_MSG_RESUME_READ: pt_req_loop_resume_reading(m->req); break;
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

int
pt_handoff_post(pt_request_t *req, pt_msg_kind_t kind)
{
    pt_msg_t *m = calloc(1, sizeof(*m));

    if (m == NULL) {
        return -ENOMEM;
    }
    m->kind = kind;
    handoff_post(req, m);
    return 0;
}

void
pt_handoff_output(pt_request_t *req, pt_buf_t *out, unsigned flags)
{
    pt_msg_t *m = malloc(sizeof(*m) + (out->len <= MSG_INLINE_MAX ? out->len : 0));

    if (m == NULL) {
        /* The request cannot be let go of safely without a message: there is no recovering from this. */
        pt_log_error("out of memory handing a response to the loop");
        abort();
    }
    m->kind = PT_MSG_OUTPUT;
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
}
