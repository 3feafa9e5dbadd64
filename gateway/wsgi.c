/*
 * WSGI (PEP 3333): running the app for a request, start_response, write(), and streaming the response iterable
 * to the client. The environ is wsgi_environ.c's; wsgi.input and wsgi.file_wrapper have files of their own.
 *
 * Each request in progress has a context object, which is also the start_response callable the app receives.
 * Contexts are pooled: a worker reuses one for every request unless the app kept a reference to it.
 *
 * The same code runs on a worker thread and, with --threads 0, on the loop thread. The only difference is how it
 * waits for a slow client: a worker drops the GIL and blocks; the loop thread suspends the response and resumes it
 * from on_drain (pt_wsgi_drain).
 */
#include "gateway.h"

#include <ctype.h>
#include <stdlib.h>
#include <unistd.h>

#include "../server/log.h"

typedef enum {
    WSGI_OK,
    WSGI_APP_ERROR, /* the app raised or broke the protocol: 500, or a cut connection after the head */
    WSGI_GONE,      /* the client went away */
} pt_outcome_t;

typedef struct pt_ctx_s {
    PyObject_HEAD
    vectorcallfunc vectorcall;
    pt_wsgi_t *w;
    pt_request_t *req; /* NULL between requests */
    PyObject *input;   /* wsgi.input, reused */
    PyObject *write;   /* the write() callable, bound to this context */
    PyObject *status;  /* from start_response */
    PyObject *headers; /* a list, copied from start_response */
    bool started;      /* start_response was called */
    bool head_sent;    /* the head is in `out` or on the wire */
    PyObject *result;  /* what the app returned */
    PyObject *iter;    /* iter(result), or NULL when `seq` is used */
    PyObject *seq;     /* result itself when it is a list or tuple (no iterator needed) */
    PyObject *held;    /* a chunk taken from the iterable while the client is slow, sent once it drains */
    Py_ssize_t pos;
    int64_t known_length;  /* total body size when known before the head is written */
    uint64_t t0;           /* when the app got the request (for --gil-trace) */
    uint64_t hold0, wait0; /* this thread's GIL held and waited totals then (--access-log-gil, --gil-routes) */
    int route;             /* what the GIL sampler counts this request's Python under (-1: none) */
    pt_buf_t out;          /* bytes for the client not yet handed to the connection */
    pt_header_t *hspans;
    size_t hcap;
    struct pt_ctx_s *next_free;
} pt_ctx_t;

struct pt_wsgi_s {
    PyObject *app;
    const pt_config_t *cfg;
    pt_ctx_t *free_ctx;
    pt_environ_t environ;
};

static PyTypeObject ctx_type;

/* ------------------------------------------------------------------------------------------------------------ */
/* start_response and write() */

/* Latin-1 bytes of a str, or NULL (with ValueError/TypeError set) when it has other characters. Borrowed. */
static const char *
latin1_view(PyObject *s, Py_ssize_t *len, const char *what)
{
    if (!PyUnicode_Check(s)) {
        PyErr_Format(PyExc_TypeError, "%s must be str, not %.100s", what, Py_TYPE(s)->tp_name);
        return NULL;
    }
    if (PyUnicode_KIND(s) != PyUnicode_1BYTE_KIND) {
        PyErr_Format(PyExc_ValueError, "%s must be latin-1 (PEP 3333): %R", what, s);
        return NULL;
    }
    *len = PyUnicode_GET_LENGTH(s);
    return (const char *)PyUnicode_1BYTE_DATA(s);
}

static int
check_status(PyObject *status)
{
    Py_ssize_t n;
    const char *p = latin1_view(status, &n, "status");

    if (p == NULL) {
        return -1;
    }
    if (n < 3 || !isdigit((unsigned char)p[0]) || !isdigit((unsigned char)p[1]) || !isdigit((unsigned char)p[2])
        || p[0] == '0' || (n > 3 && p[3] != ' ')) {
        PyErr_Format(PyExc_ValueError, "status must look like '200 OK', got %R", status);
        return -1;
    }
    if (n > 4 && !pt_header_value_valid(p + 4, (size_t)(n - 4))) {
        PyErr_Format(PyExc_ValueError, "status has a control character: %R", status);
        return -1;
    }
    return 0;
}

static int
check_headers(PyObject *headers)
{
    Py_ssize_t i, n;

    if (!PyList_Check(headers)) {
        PyErr_Format(PyExc_TypeError, "headers must be a list of (name, value) tuples, not %.100s",
                     Py_TYPE(headers)->tp_name);
        return -1;
    }
    n = PyList_GET_SIZE(headers);
    for (i = 0; i < n; i++) {
        PyObject *h = PyList_GET_ITEM(headers, i); /* borrowed */
        const char *name, *value;
        Py_ssize_t nlen, vlen;

        if (!PyTuple_Check(h) || PyTuple_GET_SIZE(h) != 2) {
            PyErr_Format(PyExc_TypeError, "header %zd must be a (name, value) tuple, got %R", i, h);
            return -1;
        }
        name = latin1_view(PyTuple_GET_ITEM(h, 0), &nlen, "header name");
        if (name == NULL) {
            return -1;
        }
        value = latin1_view(PyTuple_GET_ITEM(h, 1), &vlen, "header value");
        if (value == NULL) {
            return -1;
        }
        if (nlen == 0) {
            PyErr_SetString(PyExc_ValueError, "empty header name");
            return -1;
        }
        if (!pt_header_name_valid(name, (size_t)nlen)) {
            PyErr_Format(PyExc_ValueError, "invalid character in header name %R", PyTuple_GET_ITEM(h, 0));
            return -1;
        }
        if (!pt_header_value_valid(value, (size_t)vlen)) {
            PyErr_Format(PyExc_ValueError, "invalid character (CR, LF or control) in the value of header %R",
                         PyTuple_GET_ITEM(h, 0));
            return -1;
        }
    }
    return 0;
}

static PyObject *
ctx_start_response(PyObject *callable, PyObject *const *args, size_t nargsf, PyObject *kwnames)
{
    pt_ctx_t *ctx = (pt_ctx_t *)callable;
    Py_ssize_t nargs = PyVectorcall_NARGS(nargsf);
    PyObject *status, *headers, *exc_info = Py_None, *copy;

    if (kwnames != NULL && PyTuple_GET_SIZE(kwnames) > 0) {
        if (PyTuple_GET_SIZE(kwnames) == 1 && nargs == 2
            && PyUnicode_CompareWithASCIIString(PyTuple_GET_ITEM(kwnames, 0), "exc_info") == 0) {
            exc_info = args[2];
        } else {
            PyErr_SetString(PyExc_TypeError, "start_response(status, headers, exc_info=None)");
            return NULL;
        }
    } else if (nargs == 3) {
        exc_info = args[2];
    } else if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "start_response(status, headers, exc_info=None)");
        return NULL;
    }
    status = args[0];
    headers = args[1];
    if (ctx->req == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "start_response() called after its request finished");
        return NULL;
    }
    if (exc_info != Py_None) {
        if (!PyTuple_Check(exc_info) || PyTuple_GET_SIZE(exc_info) != 3) {
            PyErr_SetString(PyExc_TypeError, "exc_info must be a (type, value, traceback) tuple");
            return NULL;
        }
        if (ctx->head_sent) {
            /* PEP 3333: too late to change the status; re-raise the app's exception. */
            PyObject *t = PyTuple_GET_ITEM(exc_info, 0), *v = PyTuple_GET_ITEM(exc_info, 1),
                     *tb = PyTuple_GET_ITEM(exc_info, 2);

            PyErr_Restore(Py_NewRef(t), Py_NewRef(v), tb == Py_None ? NULL : Py_NewRef(tb));
            return NULL;
        }
    } else if (ctx->started) {
        PyErr_SetString(PyExc_RuntimeError, "start_response() called a second time without exc_info");
        return NULL;
    }
    if (check_status(status) < 0 || check_headers(headers) < 0) {
        return NULL;
    }
    copy = PyList_GetSlice(headers, 0, PyList_GET_SIZE(headers));
    if (copy == NULL) {
        return NULL;
    }
    Py_XSETREF(ctx->status, Py_NewRef(status));
    Py_XSETREF(ctx->headers, copy);
    ctx->started = true;
    return Py_NewRef(ctx->write);
}

/* Builds the status line and headers into ctx->out. Returns 0, or -1 with an exception set. */
static int
write_head(pt_ctx_t *ctx)
{
    pt_request_t *req = ctx->req;
    Py_ssize_t i, n = PyList_GET_SIZE(ctx->headers);
    pt_resp_ctx_t rctx = { req->http_minor, req->is_head, req->keep_alive };
    Py_ssize_t slen;
    const char *status = (const char *)PyUnicode_1BYTE_DATA(ctx->status);

    slen = PyUnicode_GET_LENGTH(ctx->status);
    if ((size_t)n > ctx->hcap) {
        pt_header_t *h = PyMem_Realloc(ctx->hspans, (size_t)n * sizeof(*h));

        if (h == NULL) {
            PyErr_NoMemory();
            return -1;
        }
        ctx->hspans = h;
        ctx->hcap = (size_t)n;
    }
    for (i = 0; i < n; i++) {
        PyObject *h = PyList_GET_ITEM(ctx->headers, i);
        PyObject *k = PyTuple_GET_ITEM(h, 0), *v = PyTuple_GET_ITEM(h, 1);

        ctx->hspans[i].name = (pt_span_t){ (const char *)PyUnicode_1BYTE_DATA(k), (size_t)PyUnicode_GET_LENGTH(k) };
        ctx->hspans[i].value = (pt_span_t){ (const char *)PyUnicode_1BYTE_DATA(v), (size_t)PyUnicode_GET_LENGTH(v) };
    }
    if (pt_resp_head(&req->resp, &rctx, &ctx->out, (pt_span_t){ status, (size_t)slen }, ctx->hspans, (size_t)n,
                     ctx->known_length)
        < 0) {
        PyErr_NoMemory();
        return -1;
    }
    ctx->head_sent = true;
    return 0;
}

/* Adds body bytes to ctx->out, the head first if it is not out yet. Returns 0, or -1 with an exception set. */
static int
emit(pt_ctx_t *ctx, const char *p, size_t n)
{
    pt_resp_t *r = &ctx->req->resp;

    if (!ctx->head_sent && write_head(ctx) < 0) {
        return -1;
    }
    if (pt_resp_body(r, &ctx->out, p, n) < 0) {
        PyErr_NoMemory();
        return -1;
    }
    if (r->overflow) {
        r->overflow = false;
        pt_log_warning("app sent more than its Content-Length (%lld) for \"%.*s %.*s\": extra bytes dropped",
                       (long long)r->content_length, (int)ctx->req->method.len, ctx->req->method.base,
                       (int)ctx->req->target.len, ctx->req->target.base);
        r->must_close = true;
    }
    return 0;
}

/* Hands ctx->out to the connection. Returns 0, or -1 when the client is gone. */
static int
flush(pt_ctx_t *ctx, unsigned flags)
{
    if (ctx->out.len == 0 && flags == 0) {
        return pt_req_gone(ctx->req) ? -1 : 0;
    }
    return pt_req_send(ctx->req, &ctx->out, flags) < 0 ? -1 : 0;
}

/* A worker waits (GIL released) for a slow client. Returns -1 when it went away. */
static int
wait_drain(pt_ctx_t *ctx)
{
    PyThreadState *ts = pt_gil_release();
    int r = pt_req_wait_drain(ctx->req);

    pt_gil_acquire(ts);
    return r < 0 ? -1 : 0;
}

static PyObject *
ctx_write(PyObject *self, PyObject *data)
{
    pt_ctx_t *ctx = (pt_ctx_t *)self;
    Py_buffer view;

    if (ctx->req == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "write() called after its request finished");
        return NULL;
    }
    if (!ctx->started) {
        PyErr_SetString(PyExc_RuntimeError, "write() called before start_response()");
        return NULL;
    }
    if (!PyBytes_Check(data)) {
        PyErr_Format(PyExc_TypeError, "write() takes bytes, not %.100s", Py_TYPE(data)->tp_name);
        return NULL;
    }
    if (PyObject_GetBuffer(data, &view, PyBUF_SIMPLE) < 0) {
        return NULL;
    }
    if (emit(ctx, view.buf, (size_t)view.len) < 0) {
        PyBuffer_Release(&view);
        return NULL;
    }
    PyBuffer_Release(&view);
    /* write() is unbuffered in PEP 3333: the bytes leave now; a worker waits for a slow client. */
    if (flush(ctx, 0) < 0 || (!pt_on_loop_thread() && pt_req_must_wait(ctx->req) && wait_drain(ctx) < 0)) {
        PyErr_SetString(PyExc_OSError, "client disconnected");
        return NULL;
    }
    Py_RETURN_NONE;
}

static PyMethodDef write_def = { "write", (PyCFunction)ctx_write, METH_O, "write(data): send body bytes now" };

/* ------------------------------------------------------------------------------------------------------------ */
/* Contexts */

static pt_ctx_t *
ctx_get(pt_wsgi_t *w)
{
    pt_ctx_t *ctx = w->free_ctx;

    if (ctx != NULL) {
        w->free_ctx = ctx->next_free;
        return ctx;
    }
    ctx = PyObject_GC_New(pt_ctx_t, &ctx_type);
    if (ctx == NULL) {
        return NULL;
    }
    ctx->vectorcall = ctx_start_response;
    ctx->w = w;
    ctx->req = NULL;
    ctx->status = ctx->headers = ctx->result = ctx->iter = ctx->seq = ctx->held = NULL;
    ctx->out = (pt_buf_t){ 0 };
    ctx->hspans = NULL;
    ctx->hcap = 0;
    ctx->next_free = NULL;
    ctx->input = pt_input_new();
    ctx->write = PyCFunction_New(&write_def, (PyObject *)ctx);
    PyObject_GC_Track(ctx);
    if (ctx->input == NULL || ctx->write == NULL) {
        Py_DECREF(ctx);
        return NULL;
    }
    return ctx;
}

static void
ctx_put(pt_ctx_t *ctx)
{
    pt_wsgi_t *w = ctx->w;

    ctx->req = NULL;
    pt_input_attach(ctx->input, NULL);
    Py_CLEAR(ctx->status);
    Py_CLEAR(ctx->headers);
    Py_CLEAR(ctx->result);
    Py_CLEAR(ctx->iter);
    Py_CLEAR(ctx->seq);
    Py_CLEAR(ctx->held);
    ctx->out.len = 0;
    if (ctx->out.cap > 256 * 1024) {
        pt_buf_free(&ctx->out);
    }
    /* The app kept start_response, write or wsgi.input beyond the request: do not hand them to another one. */
    if (Py_REFCNT(ctx) > 1 || Py_REFCNT(ctx->input) > 1 || Py_REFCNT(ctx->write) > 1) {
        Py_CLEAR(ctx->write); /* breaks the ctx <-> write cycle; the app's references keep what they need */
        Py_DECREF(ctx);
        return;
    }
    ctx->next_free = w->free_ctx;
    w->free_ctx = ctx;
}

static int
ctx_traverse(pt_ctx_t *ctx, visitproc visit, void *arg)
{
    Py_VISIT(ctx->input);
    Py_VISIT(ctx->write);
    Py_VISIT(ctx->status);
    Py_VISIT(ctx->headers);
    Py_VISIT(ctx->result);
    Py_VISIT(ctx->iter);
    Py_VISIT(ctx->seq);
    Py_VISIT(ctx->held);
    return 0;
}

static int
ctx_clear(pt_ctx_t *ctx)
{
    Py_CLEAR(ctx->input);
    Py_CLEAR(ctx->write);
    Py_CLEAR(ctx->status);
    Py_CLEAR(ctx->headers);
    Py_CLEAR(ctx->result);
    Py_CLEAR(ctx->iter);
    Py_CLEAR(ctx->seq);
    Py_CLEAR(ctx->held);
    return 0;
}

static void
ctx_dealloc(pt_ctx_t *ctx)
{
    PyObject_GC_UnTrack(ctx);
    ctx_clear(ctx);
    pt_buf_free(&ctx->out);
    PyMem_Free(ctx->hspans);
    PyObject_GC_Del(ctx);
}

/* PyVarObject_HEAD_INIT ends in its own comma, which clang-format does not know. */
/* clang-format off */
static PyTypeObject ctx_type = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "ponte.StartResponse",
    .tp_basicsize = sizeof(pt_ctx_t),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_HAVE_VECTORCALL,
    .tp_doc = "start_response(status, headers, exc_info=None) for one WSGI request.",
    .tp_vectorcall_offset = offsetof(pt_ctx_t, vectorcall),
    .tp_call = PyVectorcall_Call,
    .tp_dealloc = (destructor)ctx_dealloc,
    .tp_traverse = (traverseproc)ctx_traverse,
    .tp_clear = (inquiry)ctx_clear,
};
/* clang-format on */

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
    pt_resp_ctx_t rctx = { req->http_minor, req->is_head, req->keep_alive };

    ctx->out.len = 0;
    memset(&req->resp, 0, sizeof(req->resp));
    if (pt_resp_error(&req->resp, &rctx, &ctx->out, status) < 0) {
        ctx->out.len = 0;
    }
    ctx->head_sent = true;
}

/* Ends the request: close() the iterable, send what is left, hand the request back. */
static void
finish(pt_ctx_t *ctx, pt_outcome_t outcome)
{
    pt_request_t *req = ctx->req;
    unsigned flags = PT_SEND_DONE;

    if (outcome == WSGI_APP_ERROR && PyErr_Occurred()) {
        pt_py_log_exception("error in WSGI app", req);
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
    /* After PT_SEND_DONE a worker must not touch req again; ctx_put does not. */
    pt_req_send(req, &ctx->out, flags);
    ctx_put(ctx);
}

/* The next body chunk: a new reference, or NULL at the end (or on error, with an exception set). */
static PyObject *
next_chunk(pt_ctx_t *ctx)
{
    if (ctx->seq != NULL) {
        if (ctx->pos < PySequence_Fast_GET_SIZE(ctx->seq)) {
            return Py_NewRef(PySequence_Fast_GET_ITEM(ctx->seq, ctx->pos++));
        }
        return NULL;
    }
    return PyIter_Next(ctx->iter);
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
            if (flush(ctx, 0) < 0) {
                Py_DECREF(item);
                finish(ctx, WSGI_GONE);
                return true;
            }
            if (pt_on_loop_thread()) {
                ctx->held = item;
                pt_req_suspend(req);
                return false;
            }
            if (wait_drain(ctx) < 0) {
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
        if (emit(ctx, PyBytes_AS_STRING(item), (size_t)PyBytes_GET_SIZE(item)) < 0) {
            Py_DECREF(item);
            finish(ctx, WSGI_APP_ERROR);
            return true;
        }
        Py_DECREF(item);
        /* A generator's chunks leave as they come; a list's leave together, in as few writes as possible. */
        if (ctx->seq == NULL && flush(ctx, 0) < 0) {
            finish(ctx, WSGI_GONE);
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
        if (write_head(ctx) < 0) {
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

    if (pt_on_loop_thread() || !ctx->started
        || pt_file_wrapper_regular((pt_file_wrapper_t *)ctx->result, &fd, &offset, &count) < 0) {
        return 0;
    }
    ctx->known_length = (int64_t)count;
    if (write_head(ctx) < 0) {
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
    if (flush(ctx, 0) < 0) {
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
    pt_ctx_t *ctx = ctx_get(w);
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

        for (i = 0; i < n; i++) {
            PyObject *item = PySequence_Fast_GET_ITEM(ctx->result, i);

            if (!PyBytes_Check(item)) {
                total = -1;
                break;
            }
            total += PyBytes_GET_SIZE(item);
        }
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

    if (PyType_Ready(&ctx_type) < 0 || PyType_Ready(&pt_input_type) < 0 || PyType_Ready(&pt_file_wrapper_type) < 0) {
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
