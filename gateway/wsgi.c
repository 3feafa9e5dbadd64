/*
 * WSGI (PEP 3333): running the app for a request, start_response, write(), and streaming the response iterable
 * to the client. The environ is wsgi_environ.c's; wsgi.input and wsgi.file_wrapper have files of their own.
 *
 * Each request in progress has a context object (wsgi_ctx.c), which is also the start_response callable the app
 * receives.
 *
 * The same code runs on a worker thread and, with --threads 0, on the loop thread. The only difference is how it
 * waits for a slow client: a worker drops the GIL and blocks; the loop thread suspends the response and resumes it
 * from on_drain (pt_wsgi_drain).
 */
#include "wsgi.h"

#include <ctype.h>
#include <stdlib.h>
#include <unistd.h>

#include "../server/log.h"

typedef enum {
    WSGI_OK,
    WSGI_APP_ERROR, /* the app raised or broke the protocol: 500, or a cut connection after the head */
    WSGI_GONE,      /* the client went away */
} pt_outcome_t;

/* ------------------------------------------------------------------------------------------------------------ */
/* Running a request */

static void
call_close(pt_ctx_t *ctx)
{
    PyObject *close, *r;

    if (ctx->result == NULL) {
        return;
    }
    if (PyObject_GetOptionalAttr(ctx->result, pt_str.close, &close) < 0) {
        pt_py_log_exception("error looking up the response iterable's close()", ctx->req);
        return;
    }
    if (close == NULL) {
        return;
    }
    r = PyObject_CallNoArgs(close);
    Py_DECREF(close);
    if (r == NULL) {
        pt_py_log_exception("error in the response iterable's close()", ctx->req);
    }
    Py_XDECREF(r);
}

/* A response the server writes itself (500, 413, 400) when the app failed before its head went out. */
static void
server_error(pt_ctx_t *ctx, int status)
{
    pt_request_t *req = ctx->req;
    pt_resp_ctx_t rctx = pt_req_resp_ctx(req);

    ctx->out.len = 0;
    memset(&req->resp, 0, sizeof(req->resp));
    if (pt_resp_error(&req->resp, &rctx, &ctx->out, status) < 0) {
        ctx->out.len = 0;
    }
    ctx->head_sent = true;
}

/* The app ended with the OSError that said the client had gone: one info line with its message. */
static void
log_client_went(const pt_request_t *req)
{
    PyObject *type, *value, *tb, *msg;
    const char *text;

    PyErr_Fetch(&type, &value, &tb);
    PyErr_NormalizeException(&type, &value, &tb);
    msg = value != NULL ? PyObject_Str(value) : NULL;
    text = msg != NULL ? PyUnicode_AsUTF8(msg) : NULL;
    PyErr_Clear();
    pt_log_info("%s:%d the client went while the app ran \"%.*s %.*s\" (%s: %s)", req->remote_addr, req->remote_port,
                (int)req->method.len, req->method.base, (int)req->target.len, req->target.base,
                ((PyTypeObject *)type)->tp_name, text != NULL ? text : "?");
    Py_XDECREF(msg);
    Py_XDECREF(type);
    Py_XDECREF(value);
    Py_XDECREF(tb);
}

/* Ends the request: close() the iterable, send what is left, hand the request back. */
static void
end_request(pt_ctx_t *ctx, pt_outcome_t outcome)
{
    pt_request_t *req = ctx->req;
    unsigned flags = PT_SEND_DONE;

    if (outcome == WSGI_APP_ERROR && PyErr_Occurred()) {
        if ((pt_req_gone(req) || pt_req_body_error(req) == PT_BODY_ERR_GONE) && PyErr_ExceptionMatches(PyExc_OSError)) {
            /* wsgi.input or write() told the app that the client went, and the app let it pass: the client's
             * doing, no traceback (as gunicorn and uvicorn keep quiet about a client that goes) */
            log_client_went(req);
        } else {
            pt_py_log_exception("error in WSGI app", req);
        }
    }
    call_close(ctx);
    switch (outcome) {
    case WSGI_OK:
        pt_resp_end(&req->resp, &ctx->out);
        flags |= PT_SEND_END;
        break;
    case WSGI_APP_ERROR:
        if (!ctx->head_sent || ctx->out.len == req->resp.wire_bytes) {
            /* Nothing reached the client yet: answer with an error status instead of a cut connection. */
            server_error(ctx, pt_req_error_status(req));
            flags |= PT_SEND_END;
        } else {
            flags |= PT_SEND_ABORT;
        }
        break;
    case WSGI_GONE:
        ctx->out.len = 0;
        flags |= PT_SEND_ABORT;
        break;
    }
    {
        uint64_t hold, wait, now = pt_gil_my_use(&hold, &wait);

        req->gil_wait_run_ns = wait - ctx->wait0;
        pt_gil_route_done(req, ctx->route, hold - ctx->hold0, req->gil_wait_start_ns, req->gil_wait_run_ns, now);
        pt_gil_set_route(-1);
    }
    if (pt_gil_tracing()) {
        char label[64];

        snprintf(label, sizeof(label), "%.*s %.*s", (int)req->method.len, req->method.base, (int)req->target.len,
                 req->target.base);
        pt_gil_trace_request(ctx->t0, label);
    }
    /* After PT_SEND_DONE a worker must not touch req again; pt_wsgi_ctx_put does not. */
    pt_req_send(req, &ctx->out, flags);
    ctx->req = NULL;
}

/* As one step for a write() or start_response() from another of the app's threads (wsgi_ctx.c): either comes first,
 * and finds the request still running, or after, and finds it finished. */
static void
finish(pt_ctx_t *ctx, pt_outcome_t outcome)
{
    Py_BEGIN_CRITICAL_SECTION(ctx);
    end_request(ctx, outcome);
    Py_END_CRITICAL_SECTION();
    pt_wsgi_ctx_put(ctx);
}

/* The next body chunk: a new reference, or NULL at the end (or on error, with an exception set). */
static PyObject *
next_chunk(pt_ctx_t *ctx)
{
    if (ctx->seq != NULL) {
        /* A list may be the app's one list for every request, changed by its other threads: item by strong ref. */
        if (ctx->pos < PySequence_Fast_GET_SIZE(ctx->seq)) {
            Py_ssize_t i = ctx->pos++;

            return PyList_Check(ctx->seq) ? PyList_GetItemRef(ctx->seq, i) : Py_NewRef(PyTuple_GET_ITEM(ctx->seq, i));
        }
        return NULL;
    }
    return PyIter_Next(ctx->iter);
}

/* One chunk of the body, consumed, into ctx->out and (unless the body is a list) out to the client: 0, or -1 with
 * an exception set (the app's error) or without (the client went). In one step for the app's other threads, as
 * finish() is. */
static int
emit_chunk(pt_ctx_t *ctx, PyObject *item)
{
    int r;

    Py_BEGIN_CRITICAL_SECTION(ctx);
    r = pt_wsgi_emit(ctx, PyBytes_AS_STRING(item), (size_t)PyBytes_GET_SIZE(item));
    /* A generator's chunks leave as they come; a list's leave together, in as few writes as possible. */
    if (r == 0 && ctx->seq == NULL) {
        r = pt_wsgi_flush(ctx, 0);
    }
    Py_END_CRITICAL_SECTION();
    Py_DECREF(item);
    return r;
}

/* Streams the body until it ends, the client goes, or (loop thread only) the client is slow: then false. */
static bool
pump(pt_ctx_t *ctx)
{
    pt_request_t *req = ctx->req;
    PyObject *item;

    for (;;) {
        /* The next chunk is taken before waiting for a slow client, so that a response whose last chunk is out
         * ends at once: the worker (or the loop thread) does not wait on the client to learn there is no more. */
        item = ctx->held != NULL ? ctx->held : next_chunk(ctx);
        ctx->held = NULL;
        if (item != NULL && pt_req_must_wait(req)) {
            if (pt_wsgi_flush(ctx, 0) < 0) {
                Py_DECREF(item);
                finish(ctx, WSGI_GONE);
                return true;
            }
            if (pt_on_loop_thread()) {
                ctx->held = item;
                pt_req_suspend(req);
                return false;
            }
            if (pt_wsgi_wait_drain(ctx) < 0) {
                Py_DECREF(item);
                finish(ctx, WSGI_GONE);
                return true;
            }
        }
        if (item == NULL) {
            if (PyErr_Occurred()) {
                finish(ctx, WSGI_APP_ERROR);
                return true;
            }
            break;
        }
        if (!PyBytes_Check(item)) {
            PyErr_Format(PyExc_TypeError, "the response iterable must yield bytes, not %.100s", Py_TYPE(item)->tp_name);
            Py_DECREF(item);
            finish(ctx, WSGI_APP_ERROR);
            return true;
        }
        if (PyBytes_GET_SIZE(item) == 0) {
            Py_DECREF(item);
            continue;
        }
        if (!ctx->started) {
            Py_DECREF(item);
            PyErr_SetString(PyExc_RuntimeError, "the app returned body bytes before calling start_response()");
            finish(ctx, WSGI_APP_ERROR);
            return true;
        }
        if (emit_chunk(ctx, item) < 0) {
            finish(ctx, PyErr_Occurred() ? WSGI_APP_ERROR : WSGI_GONE);
            return true;
        }
    }
    if (!ctx->started) {
        PyErr_SetString(PyExc_RuntimeError, "the app returned without calling start_response()");
        finish(ctx, WSGI_APP_ERROR);
        return true;
    }
    if (!ctx->head_sent) {
        ctx->known_length = 0;
        if (pt_wsgi_write_head(ctx) < 0) {
            finish(ctx, WSGI_APP_ERROR);
            return true;
        }
    }
    finish(ctx, WSGI_OK);
    return true;
}

/* Sends a wsgi.file_wrapper around a regular file with sendfile(2). Returns 1 when it did, 0 to iterate it. */
static int
try_sendfile(pt_ctx_t *ctx)
{
    pt_request_t *req = ctx->req;
    int fd;
    off_t offset;
    ssize_t sent;
    size_t count;

    /* Over TLS the file's bytes must be encrypted, over HTTP/2 framed: the wrapper is iterated instead. */
    if (pt_on_loop_thread() || !ctx->started || req->tls != NULL || req->h2 != NULL
        || pt_file_wrapper_regular((pt_file_wrapper_t *)ctx->result, &fd, &offset, &count) < 0) {
        return 0;
    }
    ctx->known_length = (int64_t)count;
    if (pt_wsgi_write_head(ctx) < 0) {
        finish(ctx, WSGI_APP_ERROR);
        return 1;
    }
    if (req->resp.frame == PT_FRAME_LENGTH && (uint64_t)req->resp.content_length < count) {
        count = (size_t)req->resp.content_length;
    }
    if (req->resp.frame != PT_FRAME_LENGTH && req->resp.frame != PT_FRAME_CLOSE) {
        /* HEAD, bodyless status, or a chunked response the app asked for: no sendfile needed. */
        finish(ctx, WSGI_OK);
        return 1;
    }
    if (pt_wsgi_flush(ctx, 0) < 0) {
        finish(ctx, WSGI_GONE);
        return 1;
    }
    {
        PyThreadState *ts = pt_gil_release();

        sent = pt_req_sendfile(req, fd, offset, count);
        pt_gil_acquire(ts);
    }
    if (sent < 0) {
        pt_log_info("sendfile to %s:%d: %s", req->remote_addr, req->remote_port, strerror((int)-sent));
        finish(ctx, WSGI_GONE);
        return 1;
    }
    req->resp.body_bytes += (uint64_t)sent;
    req->resp.wire_bytes += (uint64_t)sent;
    if ((size_t)sent < count) {
        req->resp.must_close = true; /* the file shrank under us: the framing promised more */
    }
    finish(ctx, WSGI_OK);
    return 1;
}

void
pt_wsgi_handle(pt_wsgi_t *w, pt_request_t *req)
{
    pt_ctx_t *ctx = pt_wsgi_ctx_get(w);
    PyObject *env, *args[2];

    if (ctx == NULL) {
        pt_buf_t out = { 0 };

        pt_py_log_exception("cannot start a WSGI request", req);
        pt_req_send(req, &out, PT_SEND_DONE | PT_SEND_ABORT);
        return;
    }
    ctx->req = req;
    ctx->t0 = pt_gil_my_use(&ctx->hold0, &ctx->wait0);
    ctx->route = pt_gil_sampler_on() ? pt_gil_route_index(req) : -1;
    pt_gil_set_route(ctx->route); /* the sampler's: until finish(), or until the loop thread suspends it */
    ctx->started = ctx->head_sent = false;
    ctx->known_length = -1;
    ctx->pos = 0;
    req->app_data = ctx;
    pt_input_attach(ctx->input, req);

    env = pt_environ_new(&w->environ, req, ctx->input);
    if (env == NULL) {
        finish(ctx, WSGI_APP_ERROR);
        return;
    }
    args[0] = env;
    args[1] = (PyObject *)ctx;
    ctx->result = PyObject_Vectorcall(w->app, args, 2, NULL);
    Py_DECREF(env);
    if (ctx->result == NULL) {
        finish(ctx, WSGI_APP_ERROR);
        return;
    }
    if (PyList_CheckExact(ctx->result) || PyTuple_CheckExact(ctx->result)) {
        /* The whole body is here: its size goes into Content-Length, and it leaves in one write. */
        Py_ssize_t i, n = PySequence_Fast_GET_SIZE(ctx->result);
        int64_t total = 0;

        for (i = 0; i < n && total >= 0; i++) {
            PyObject *item = PyList_Check(ctx->result) ? PyList_GetItemRef(ctx->result, i)
                                                       : Py_NewRef(PyTuple_GET_ITEM(ctx->result, i));

            total = item != NULL && PyBytes_Check(item) ? total + PyBytes_GET_SIZE(item) : -1;
            Py_XDECREF(item);
        }
        PyErr_Clear(); /* a list shortened meanwhile: its length is not known, and next_chunk stops at its end */
        ctx->known_length = total;
        ctx->seq = Py_NewRef(ctx->result);
    } else {
        if (Py_IS_TYPE(ctx->result, &pt_file_wrapper_type) && try_sendfile(ctx)) {
            return;
        }
        ctx->iter = PyObject_GetIter(ctx->result);
        if (ctx->iter == NULL) {
            PyObject *type = (PyObject *)Py_TYPE(ctx->result);

            PyErr_Clear();
            PyErr_Format(PyExc_TypeError, "the WSGI app must return an iterable of bytes, not %.100s",
                         ((PyTypeObject *)type)->tp_name);
            finish(ctx, WSGI_APP_ERROR);
            return;
        }
    }
    pump(ctx);
    pt_gil_set_route(-1); /* done, or (on the loop thread) suspended until pt_wsgi_drain */
}

void
pt_wsgi_drain(pt_wsgi_t *w, pt_request_t *req)
{
    pt_ctx_t *ctx = req->app_data;

    pt_gil_set_route(ctx->route); /* --threads 0 resumes a response it suspended: the sampler counts it again */
    pump(ctx);
    pt_gil_set_route(-1);
}

void
pt_wsgi_gone(pt_wsgi_t *w, pt_request_t *req)
{
    finish((pt_ctx_t *)req->app_data, WSGI_GONE);
}

int
pt_wsgi_init(pt_wsgi_t **out, PyObject *app, const pt_config_t *cfg)
{
    pt_wsgi_t *w;

    if (pt_wsgi_ctx_types_ready() < 0 || PyType_Ready(&pt_input_type) < 0 || PyType_Ready(&pt_file_wrapper_type) < 0) {
        return -1;
    }
    w = PyMem_Calloc(1, sizeof(*w));
    if (w == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    w->app = Py_NewRef(app);
    w->cfg = cfg;
    if (pt_environ_init(&w->environ, cfg) < 0) {
        Py_DECREF(w->app);
        PyMem_Free(w);
        return -1;
    }
    *out = w;
    return 0;
}
