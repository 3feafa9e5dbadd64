/*
 * One ASGI HTTP request (spec 2.4): the receive and send callables the app gets, and finishing the request when the
 * app's coroutine ends.
 *
 * receive() and send() that can complete at once return an already-completed awaitable: no Future, no extra loop
 * iteration. Only a receive() with no body bytes buffered, or a send() facing a full output queue, waits on a
 * Future, which the server's events resolve (pt_asgi_http_body, _drain, _gone).
 */
#include "asgi.h"

#include <errno.h>

#include "../server/log.h"

#define RECV_CHUNK (64 * 1024)

typedef struct pt_asgi_ctx_s pt_asgi_ctx_t;

struct pt_asgi_ctx_s {
    PyObject_HEAD
    pt_request_t *req; /* NULL once the app is finished with it */
    uint64_t seq;
    uint64_t t0;                   /* when the request started (for --gil-trace) */
    uint64_t gil_hold, gil_wait;   /* by the app's steps so far (--gil-routes) */
    int route;                     /* pt_gil_route_index, once the sampler asked for it (-1 before) */
    PyObject *receive, *send;      /* bound to this context */
    PyObject *task;                /* the Task running the app: kept alive while the request is open */
    PyObject *recv_fut, *send_fut; /* a receive()/send() waiting */
    PyObject *headers;             /* list of (name, value) bytes from http.response.start */
    int status;
    bool started, head_sent, complete, body_done, disconnected;
    bool told_gone; /* receive() has returned http.disconnect: the app may end without a response */
    pt_buf_t out;
    pt_header_t *hspans;
    size_t hcap;
};

static PyTypeObject ctx_type;

static int
ctx_traverse(pt_asgi_ctx_t *c, visitproc visit, void *arg)
{
    Py_VISIT(c->receive);
    Py_VISIT(c->send);
    Py_VISIT(c->task);
    Py_VISIT(c->recv_fut);
    Py_VISIT(c->send_fut);
    Py_VISIT(c->headers);
    return 0;
}

static int
ctx_clear(pt_asgi_ctx_t *c)
{
    Py_CLEAR(c->receive);
    Py_CLEAR(c->send);
    Py_CLEAR(c->task);
    Py_CLEAR(c->recv_fut);
    Py_CLEAR(c->send_fut);
    Py_CLEAR(c->headers);
    return 0;
}

static void
ctx_dealloc(pt_asgi_ctx_t *c)
{
    PyObject_GC_UnTrack(c);
    ctx_clear(c);
    pt_buf_free(&c->out);
    PyMem_Free(c->hspans);
    PyObject_GC_Del(c);
}

static PyObject *
disconnect_error(void)
{
    return PyObject_CallFunction(pt_asgi.client_disconnected, "s", "client disconnected");
}

/* {"type": "http.request", "body": body, "more_body": more}. Steals `body`. New ref. */
static PyObject *
receive_event(PyObject *body, bool more)
{
    PyObject *ev = body ? PyDict_New() : NULL;

    if (ev == NULL || PyDict_SetItem(ev, pt_str.type, pt_str.http_request) < 0
        || PyDict_SetItem(ev, pt_str.body, body) < 0
        || PyDict_SetItem(ev, pt_str.more_body, more ? Py_True : Py_False) < 0) {
        Py_XDECREF(ev);
        ev = NULL;
    }
    Py_XDECREF(body);
    return ev;
}

/* The next receive() event, or NULL without an exception when it has to wait. New ref. */
static PyObject *
next_receive_event(pt_asgi_ctx_t *c)
{
    PyObject *body;
    Py_ssize_t len = 0;
    ssize_t r = 0;

    if (c->disconnected || c->complete || c->req == NULL) {
        c->told_gone = true;
        return Py_NewRef(pt_asgi.disconnect_event);
    }
    if (!c->body_done && pt_req_body_complete(c->req)) {
        /* Nothing (more) to read, the common case for GET: no buffer to allocate. */
        c->body_done = true;
        return receive_event(Py_NewRef(pt_str.empty_bytes), false);
    }
    if (c->body_done) {
        if (c->req->client_eof) {
            /* EOF after the body: like uvicorn, that is the disconnect (send() still works: it may read). */
            c->told_gone = true;
            return Py_NewRef(pt_asgi.disconnect_event);
        }
        return NULL; /* the body is all delivered: the next event is the disconnect */
    }
    body = PyBytes_FromStringAndSize(NULL, RECV_CHUNK);
    if (body == NULL) {
        return NULL;
    }
    while (len < RECV_CHUNK) {
        r = pt_req_read(c->req, PyBytes_AS_STRING(body) + len, (size_t)(RECV_CHUNK - len), -1, false);
        if (r <= 0) {
            break;
        }
        len += r;
    }
    if (len == 0 && r == -EAGAIN) {
        Py_DECREF(body);
        return NULL;
    }
    if (len == 0 && r < 0) {
        Py_DECREF(body);
        c->disconnected = c->told_gone = true;
        return Py_NewRef(pt_asgi.disconnect_event);
    }
    if (_PyBytes_Resize(&body, len) < 0) {
        return NULL;
    }
    c->body_done = r == 0 && pt_req_body_complete(c->req);
    if (!c->body_done && r == 0) {
        c->body_done = pt_req_body_complete(c->req);
    }
    return receive_event(body, !c->body_done);
}

static PyObject *
ctx_receive(pt_asgi_ctx_t *c, PyObject *unused)
{
    PyObject *ev = next_receive_event(c);

    if (ev != NULL) {
        return pt_asgi_ready(ev);
    }
    if (PyErr_Occurred()) {
        return NULL;
    }
    if (c->recv_fut != NULL && !pt_asgi_fut_done(c->recv_fut)) {
        PyErr_SetString(PyExc_RuntimeError, "receive() awaited twice at the same time");
        return NULL;
    }
    Py_CLEAR(c->recv_fut); /* a receive() the app cancelled (wait_for) */
    c->recv_fut = PyObject_CallNoArgs(pt_asgi_here.create_future);
    return Py_XNewRef(c->recv_fut);
}

/* Something happened to the request (body bytes, end, disconnect, response complete): a waiting receive() may go. */
static void
ctx_wake_receive(pt_asgi_ctx_t *c)
{
    PyObject *ev;

    if (c->recv_fut == NULL) {
        return;
    }
    ev = next_receive_event(c);
    if (ev != NULL) {
        pt_asgi_fut_resolve(&c->recv_fut, ev, NULL);
    } else if (PyErr_Occurred()) {
        PyObject *type, *value, *tb;

        PyErr_Fetch(&type, &value, &tb);
        PyErr_NormalizeException(&type, &value, &tb);
        pt_asgi_fut_resolve(&c->recv_fut, NULL, value);
        Py_XDECREF(type);
        Py_XDECREF(value);
        Py_XDECREF(tb);
    }
}

/* Item i of what PySequence_Fast gave: a strong reference, as a list may be the app's and change in another thread
 * (free-threaded CPython) while it is read. NULL with an exception if it shrank meanwhile. */
static PyObject *
fast_item(PyObject *seq, Py_ssize_t i)
{
    return PyList_Check(seq) ? PyList_GetItemRef(seq, i) : Py_NewRef(PyTuple_GET_ITEM(seq, i));
}

/* The header (name, value) as a tuple of two bytes, checked: a new reference, or NULL with an exception set. */
static PyObject *
checked_header(PyObject *item)
{
    static const char pair_msg[] = "each header must be a [name, value] pair of bytes";
    PyObject *seq = PySequence_Fast(item, pair_msg), *name = NULL, *value = NULL, *pair = NULL;

    if (seq == NULL) {
        return NULL;
    }
    if (PySequence_Fast_GET_SIZE(seq) != 2) {
        PyErr_SetString(PyExc_TypeError, pair_msg);
    } else if ((name = fast_item(seq, 0)) == NULL || (value = fast_item(seq, 1)) == NULL) {
        /* shrank meanwhile: the IndexError says so */
    } else if (!PyBytes_Check(name) || !PyBytes_Check(value) || PyBytes_GET_SIZE(name) == 0) {
        PyErr_SetString(PyExc_TypeError, "header names and values must be bytes (names non-empty)");
    } else if (!pt_header_name_valid(PyBytes_AS_STRING(name), (size_t)PyBytes_GET_SIZE(name))) {
        PyErr_Format(PyExc_ValueError, "invalid character in header name %R", name);
    } else if (!pt_header_value_valid(PyBytes_AS_STRING(value), (size_t)PyBytes_GET_SIZE(value))) {
        PyErr_Format(PyExc_ValueError, "invalid character (CR, LF or control) in the value of header %R", name);
    } else if (PyTuple_CheckExact(seq) && PyBytes_CheckExact(name) && PyBytes_CheckExact(value)) {
        pair = Py_NewRef(seq); /* a tuple of two bytes is immutable all the way down: kept as it is */
    } else {
        pair = PyTuple_Pack(2, name, value);
    }
    Py_XDECREF(name);
    Py_XDECREF(value);
    Py_DECREF(seq);
    return pair;
}

PyObject *
pt_asgi_check_headers(PyObject *headers)
{
    PyObject *all = PySequence_Fast(headers, "headers must be an iterable of [name, value] pairs"), *list;
    Py_ssize_t i, n;

    if (all == NULL) {
        return NULL;
    }
    n = PySequence_Fast_GET_SIZE(all);
    list = PyList_New(n);
    for (i = 0; list != NULL && i < n; i++) {
        PyObject *item = fast_item(all, i), *pair = item != NULL ? checked_header(item) : NULL;

        Py_XDECREF(item);
        if (pair == NULL) {
            Py_CLEAR(list);
            break;
        }
        PyList_SET_ITEM(list, i, pair);
    }
    Py_DECREF(all);
    return list;
}

Py_ssize_t
pt_asgi_header_spans(PyObject *headers, pt_header_t **spans, size_t *cap)
{
    Py_ssize_t i, n = PyList_GET_SIZE(headers);

    if ((size_t)n > *cap) {
        pt_header_t *h = PyMem_Realloc(*spans, (size_t)n * sizeof(*h));

        if (h == NULL) {
            PyErr_NoMemory();
            return -1;
        }
        *spans = h;
        *cap = (size_t)n;
    }
    for (i = 0; i < n; i++) {
        PyObject *pair = PyList_GET_ITEM(headers, i);
        PyObject *k = PyTuple_GET_ITEM(pair, 0), *v = PyTuple_GET_ITEM(pair, 1);

        (*spans)[i].name = (pt_span_t){ PyBytes_AS_STRING(k), (size_t)PyBytes_GET_SIZE(k) };
        (*spans)[i].value = (pt_span_t){ PyBytes_AS_STRING(v), (size_t)PyBytes_GET_SIZE(v) };
    }
    return n;
}

int
pt_asgi_write_head(pt_request_t *req, const pt_resp_ctx_t *rctx, int status, PyObject *headers, int64_t known_length,
                   pt_buf_t *out, pt_header_t **spans, size_t *cap)
{
    Py_ssize_t n = pt_asgi_header_spans(headers, spans, cap);
    char line[PT_STATUS_LINE_MAX];

    if (n < 0) {
        return -1;
    }
    if (pt_resp_head(&req->resp, rctx, out, pt_status_line(status, line), *spans, (size_t)n, known_length) < 0) {
        PyErr_NoMemory();
        return -1;
    }
    return 0;
}

static int
write_head(pt_asgi_ctx_t *c, int64_t known_length)
{
    pt_request_t *req = c->req;
    pt_resp_ctx_t rctx = pt_req_resp_ctx(req);

    if (pt_asgi_write_head(req, &rctx, c->status, c->headers, known_length, &c->out, &c->hspans, &c->hcap) < 0) {
        return -1;
    }
    c->head_sent = true;
    return 0;
}

/* A send() that failed because the client is gone: ponte.ClientDisconnected (an OSError), as uvicorn raises. */
static PyObject *
send_disconnected(pt_asgi_ctx_t *c)
{
    c->disconnected = true;
    PyErr_SetString(pt_asgi.client_disconnected, "client disconnected");
    return NULL;
}

/* http.response.start: the status and headers are kept until the first body, which may let them carry a length. */
static PyObject *
send_start(pt_asgi_ctx_t *c, PyObject *status, PyObject *headers)
{
    long code;

    if (c->started) {
        PyErr_SetString(PyExc_RuntimeError, "http.response.start sent twice");
        return NULL;
    }
    if (status == NULL || !PyLong_Check(status)) {
        PyErr_SetString(PyExc_ValueError, "http.response.start needs an int 'status'");
        return NULL;
    }
    code = PyLong_AsLong(status);
    if (code < 100 || code > 999) {
        PyErr_Format(PyExc_ValueError, "invalid status %ld", code);
        return NULL;
    }
    c->headers = headers ? pt_asgi_check_headers(headers) : PyList_New(0);
    if (c->headers == NULL) {
        return NULL;
    }
    c->status = (int)code;
    c->started = true;
    return pt_asgi_ready(Py_NewRef(Py_None));
}

/* Frames the body bytes of `view` into c->out, the head first if it is not out yet. 0, or -1 with an exception. */
static int
frame_body(pt_asgi_ctx_t *c, const Py_buffer *view, bool more_body)
{
    if (!c->head_sent && write_head(c, more_body ? -1 : (int64_t)view->len) < 0) {
        return -1;
    }
    if (view->len > 0 && pt_resp_body(&c->req->resp, &c->out, view->buf, (size_t)view->len) < 0) {
        PyErr_NoMemory();
        return -1;
    }
    if (!more_body) {
        pt_resp_end(&c->req->resp, &c->out);
        c->complete = true;
    }
    return 0;
}

/* http.response.body: framed and handed to the connection; waits (a Future) only when the client reads slowly. */
static PyObject *
send_body(pt_asgi_ctx_t *c, PyObject *body, PyObject *more)
{
    int more_body = more == NULL ? 0 : PyObject_IsTrue(more);
    Py_buffer view = { 0 };
    int r;

    if (PyErr_Occurred()) {
        return NULL;
    }
    if (!c->started) {
        PyErr_SetString(PyExc_RuntimeError, "http.response.body before http.response.start");
        return NULL;
    }
    if (c->complete) {
        PyErr_SetString(PyExc_RuntimeError, "http.response.body after the response was complete");
        return NULL;
    }
    if (body != NULL && PyObject_GetBuffer(body, &view, PyBUF_SIMPLE) < 0) {
        return NULL;
    }
    r = frame_body(c, &view, more_body);
    PyBuffer_Release(&view);
    if (r < 0) {
        return NULL;
    }
    if (pt_req_send(c->req, &c->out, c->complete ? PT_SEND_END : 0) < 0) {
        return send_disconnected(c);
    }
    if (c->complete) {
        ctx_wake_receive(c); /* http.disconnect for a receive() waiting past the response */
    } else if (pt_req_must_wait(c->req)) {
        /* A slow client: this send() completes when the queue drains (on_drain). */
        Py_XSETREF(c->send_fut, PyObject_CallNoArgs(pt_asgi_here.create_future));
        if (c->send_fut == NULL) {
            return NULL;
        }
        pt_req_suspend(c->req);
        return Py_NewRef(c->send_fut);
    }
    return pt_asgi_ready(Py_NewRef(Py_None));
}

/* The event's values a send() needs, as strong references: the dict is the app's, which another thread could change
 * (free-threaded CPython). Each of *a and *b is NULL when absent; -1 with an exception set if a lookup failed. */
static int
event_values(PyObject *event, PyObject *ka, PyObject **a, PyObject *kb, PyObject **b)
{
    *b = NULL;
    if (PyDict_GetItemRef(event, ka, a) < 0 || PyDict_GetItemRef(event, kb, b) < 0) {
        Py_CLEAR(*a);
        return -1;
    }
    return 0;
}

static PyObject *
send_event(pt_asgi_ctx_t *c, PyObject *event, PyObject *type)
{
    PyObject *a, *b, *r;
    bool start;

    if (type == NULL || !PyUnicode_Check(type)) {
        PyErr_SetString(PyExc_ValueError, "ASGI event without a 'type'");
        return NULL;
    }
    if (c->req == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "send() after the request finished");
        return NULL;
    }
    if (c->disconnected || pt_req_gone(c->req)) {
        return send_disconnected(c);
    }
    start = PyUnicode_CompareWithASCIIString(type, "http.response.start") == 0;
    if (!start && PyUnicode_CompareWithASCIIString(type, "http.response.body") != 0) {
        PyErr_Format(PyExc_ValueError, "unexpected ASGI message type %R for an http scope", type);
        return NULL;
    }
    if (start ? event_values(event, pt_str.status, &a, pt_str.headers, &b) < 0
              : event_values(event, pt_str.body, &a, pt_str.more_body, &b) < 0) {
        return NULL;
    }
    r = start ? send_start(c, a, b) : send_body(c, a, b);
    Py_XDECREF(a);
    Py_XDECREF(b);
    return r;
}

static PyObject *
ctx_send(pt_asgi_ctx_t *c, PyObject *event)
{
    PyObject *type, *r;

    if (!PyDict_Check(event)) {
        PyErr_Format(PyExc_TypeError, "send() takes a dict event, not %.100s", Py_TYPE(event)->tp_name);
        return NULL;
    }
    if (PyDict_GetItemRef(event, pt_str.type, &type) < 0) {
        return NULL;
    }
    r = send_event(c, event, type);
    Py_XDECREF(type);
    return r;
}

/*
 * Answers what the app left unanswered (500, or a cut connection once the head is out), gives the request back and
 * drops the request's reference to this context. The caller holds its own.
 */
static void
ctx_finish(pt_asgi_ctx_t *c)
{
    pt_request_t *req = c->req;
    unsigned flags = PT_SEND_DONE;
    bool owned;

    if (req == NULL) {
        return;
    }
    if (!c->complete) {
        if (!c->head_sent) {
            pt_resp_ctx_t rctx = pt_req_resp_ctx(req);

            c->out.len = 0;
            memset(&req->resp, 0, sizeof(req->resp));
            if (pt_resp_error(&req->resp, &rctx, &c->out, pt_req_error_status(req)) < 0) {
                c->out.len = 0;
            }
            flags |= PT_SEND_END;
        } else {
            flags |= PT_SEND_ABORT; /* the head is out: only closing tells the client the body is cut */
        }
    }
    if (pt_gil_tracing()) {
        char label[64];

        snprintf(label, sizeof(label), "%.*s %.*s", (int)req->method.len, req->method.base, (int)req->target.len,
                 req->target.base);
        pt_gil_trace_request(c->t0, label);
    }
    /* From ended(), the last step's GIL already counted; ASGI requests do not wait for the GIL to start (they wait
     * for the loop: its lag). */
    pt_gil_route_done(req, c->route, c->gil_hold, 0, c->gil_wait, pt_gil_now());
    c->req = NULL;
    owned = req->app_data == c;
    req->app_data = NULL;
    pt_asgi_let_go(req, &c->out, flags);
    pt_asgi_fut_resolve(&c->recv_fut, NULL, NULL);
    pt_asgi_fut_resolve(&c->send_fut, NULL, NULL);
    /* Break the context <-> receive/send cycle now rather than leave it to the garbage collector. */
    Py_CLEAR(c->task);
    Py_CLEAR(c->receive);
    Py_CLEAR(c->send);
    if (owned) {
        Py_DECREF(c);
    }
}

/* The app's coroutine ended: say how if it went wrong, then finish the request. `exc` is NULL when it returned. */
static void
ctx_ended(PyObject *owner, PyObject *exc)
{
    pt_asgi_ctx_t *c = (pt_asgi_ctx_t *)owner;
    pt_request_t *req = c->req;

    if (req == NULL) {
        return;
    }
    if (exc == NULL) {
        if (!c->complete && (c->told_gone || c->disconnected)) {
            /* told that the client went (http.disconnect, or send() raised): the app may end there, as in uvicorn */
            pt_log_debug("ASGI app ended after the client went, without a complete response: \"%.*s %.*s\"",
                         (int)req->method.len, req->method.base, (int)req->target.len, req->target.base);
        } else if (!c->complete) {
            pt_log_error("ASGI app returned without %s for \"%.*s %.*s\"",
                         c->started ? "completing its response" : "sending a response", (int)req->method.len,
                         req->method.base, (int)req->target.len, req->target.base);
        }
    } else if (PyErr_GivenExceptionMatches(exc, PyExc_Exception)) {
        PyErr_SetObject((PyObject *)Py_TYPE(exc), exc);
        pt_py_log_exception("error in ASGI app", req);
    } else {
        /* CancelledError, or KeyboardInterrupt/SystemExit passing through: the Task sees it after this. */
        pt_log_warning("ASGI app task for \"%.*s %.*s\" %s (%s)", (int)req->method.len, req->method.base,
                       (int)req->target.len, req->target.base,
                       c->complete ? "ended" : "ended before its response was complete", Py_TYPE(exc)->tp_name);
    }
    ctx_finish(c);
}

/* The app's coroutine was closed (not run to its end): the request is finished as it stands. */
static void
ctx_closed(PyObject *owner)
{
    pt_asgi_ctx_t *c = (pt_asgi_ctx_t *)owner;
    pt_request_t *req = c->req;

    if (req != NULL) {
        pt_log_warning("ASGI app coroutine for \"%.*s %.*s\" was closed before it ended", (int)req->method.len,
                       req->method.base, (int)req->target.len, req->target.base);
        ctx_finish(c);
    }
}

/* --gil-routes: the GIL each step of the app held and waited for, summed for the request. */
static void
ctx_step_gil(PyObject *owner, uint64_t hold, uint64_t wait)
{
    pt_asgi_ctx_t *c = (pt_asgi_ctx_t *)owner;

    c->gil_hold += hold;
    c->gil_wait += wait;
}

/* The sampler: the request's route, kept for pt_gil_route_done at the end. */
static int
ctx_route(PyObject *owner)
{
    pt_asgi_ctx_t *c = (pt_asgi_ctx_t *)owner;

    c->route = c->req != NULL ? pt_gil_route_index(c->req) : -1;
    return c->route;
}

static const pt_asgi_run_hooks_t ctx_hooks = { ctx_ended, ctx_closed, ctx_step_gil, ctx_route };

static PyMethodDef receive_def = { "receive", (PyCFunction)ctx_receive, METH_NOARGS, "ASGI receive()" };
static PyMethodDef send_def = { "send", (PyCFunction)ctx_send, METH_O, "ASGI send(event)" };

/* PyVarObject_HEAD_INIT ends in its own comma, which clang-format does not know. */
/* clang-format off */
static PyTypeObject ctx_type = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "ponte.ASGIHTTPRequest",
    .tp_basicsize = sizeof(pt_asgi_ctx_t),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_doc = "One ASGI HTTP request: its receive and send callables.",
    .tp_dealloc = (destructor)ctx_dealloc,
    .tp_traverse = (traverseproc)ctx_traverse,
    .tp_clear = (inquiry)ctx_clear,
};
/* clang-format on */

/* A context for `req`, with its receive and send callables; not yet attached to the request. New ref. */
static pt_asgi_ctx_t *
ctx_new(pt_request_t *req)
{
    pt_asgi_ctx_t *c = PyObject_GC_New(pt_asgi_ctx_t, &ctx_type);

    if (c == NULL) {
        return NULL;
    }
    c->req = NULL;
    c->seq = req->seq;
    c->t0 = pt_gil_now();
    c->gil_hold = c->gil_wait = 0;
    c->route = -1;
    c->task = c->recv_fut = c->send_fut = c->headers = NULL;
    c->status = 0;
    c->started = c->head_sent = c->complete = c->body_done = c->disconnected = c->told_gone = false;
    c->out = (pt_buf_t){ 0 };
    c->hspans = NULL;
    c->hcap = 0;
    c->receive = PyCFunction_New(&receive_def, (PyObject *)c);
    c->send = PyCFunction_New(&send_def, (PyObject *)c);
    PyObject_GC_Track(c);
    if (c->receive == NULL || c->send == NULL) {
        Py_DECREF(c);
        return NULL;
    }
    return c;
}

PyObject *
pt_asgi_app_call(PyObject *scope, PyObject *receive, PyObject *send)
{
    PyObject *instance, *coro;

    if (pt_asgi.cfg->interface != PT_IFACE_ASGI2) {
        PyObject *args[3] = { scope, receive, send };

        return PyObject_Vectorcall(pt_asgi.app, args, 3, NULL);
    }
    instance = PyObject_CallOneArg(pt_asgi.app, scope);
    coro = instance ? PyObject_CallFunctionObjArgs(instance, receive, send, NULL) : NULL;
    Py_XDECREF(instance);
    return coro;
}

void
pt_asgi_http_start(pt_request_t *req)
{
    pt_asgi_ctx_t *c = ctx_new(req);
    PyObject *scope = NULL, *coro;

    if (c == NULL) {
        pt_buf_t out = { 0 };

        pt_py_log_exception("cannot start the ASGI app", req);
        pt_asgi_let_go(req, &out, PT_SEND_ABORT);
        return;
    }
    /* The request owns a reference until ctx_finish: that keeps the context, and through c->task the Task,
     * alive while the app waits on a future that only this context knows (a receive() waiting for the body),
     * where the garbage collector would otherwise find them an unreachable cycle. */
    c->req = req;
    req->app_data = Py_NewRef(c);
    scope = pt_asgi_scope_http(req);
    coro = scope ? pt_asgi_app_call(scope, c->receive, c->send) : NULL;
    if (coro == NULL || pt_asgi_task(coro, (PyObject *)c, &ctx_hooks, &c->task) < 0) {
        pt_py_log_exception("cannot start the ASGI app", req);
        ctx_finish(c); /* 500 */
    }
    Py_XDECREF(scope);
    Py_DECREF(c);
}

/* ------------------------------------------------------------------------------------------------------------ */
/* The server's events */

void
pt_asgi_http_body(pt_request_t *req)
{
    pt_asgi_ctx_t *c = req->app_data;

    if (c != NULL) {
        ctx_wake_receive(c);
    }
}

void
pt_asgi_http_drain(pt_request_t *req)
{
    pt_asgi_ctx_t *c = req->app_data;

    if (c != NULL) {
        pt_asgi_fut_resolve(&c->send_fut, NULL, NULL);
    }
}

void
pt_asgi_http_gone(pt_request_t *req)
{
    pt_asgi_ctx_t *c = req->app_data;
    PyObject *err;

    if (c == NULL) {
        return;
    }
    err = disconnect_error();
    c->disconnected = true;
    ctx_wake_receive(c);
    if (err != NULL) {
        pt_asgi_fut_resolve(&c->send_fut, NULL, err);
        Py_DECREF(err);
    }
}

int
pt_asgi_http_init(void)
{
    return PyType_Ready(&ctx_type);
}
