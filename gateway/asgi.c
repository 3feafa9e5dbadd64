/*
 * ASGI 3.0 (HTTP, spec 2.4) on an asyncio event loop driven by ponte's libuv loop, in the loop thread.
 *
 * asyncio.SelectorEventLoop(LibuvSelector()) runs on the main thread (asgi_selector.py). Whenever asyncio would
 * block it calls select(), which is run_once() here: drop the GIL, run one libuv iteration (HTTP sockets, timers,
 * and uv_poll handles for the descriptors asyncio watches), take the GIL back, then turn what libuv reported into
 * asyncio work: start a task per new request, resolve the futures of receive()/send() calls that had to wait.
 *
 * The server callbacks (on_request, on_body, on_drain, on_gone) run inside uv_run without the GIL, so they only
 * queue an event; Python is entered afterwards, in run_once, with the GIL held.
 *
 * receive() and send() that can complete at once return an already-completed awaitable: no Future, no extra loop
 * iteration. Only a receive() with no body bytes buffered, or a send() facing a full output queue, waits on a
 * Future.
 */
#include "gateway.h"

#include <ctype.h>
#include <errno.h>
#include <stdlib.h>
#include <strings.h>
#include <sys/timerfd.h>
#include <time.h>
#include <unistd.h>

#include "../server/log.h"
#include "asgi_lifespan.h"
#include "asgi_selector.h"

#define RECV_CHUNK (64 * 1024)

typedef enum {
    EV_START,
    EV_BODY,
    EV_DRAIN,
    EV_GONE,
} pt_event_kind_t;

typedef struct {
    pt_event_kind_t kind;
    pt_request_t *req;
    uint64_t seq;           /* the request's number when queued: a stale event (request since reused) is dropped */
} pt_event_t;

typedef struct {
    uv_poll_t h;
    int fd;
    int events;             /* selectors.EVENT_READ | EVENT_WRITE */
} pt_poll_t;

typedef struct pt_asgi_ctx_s pt_asgi_ctx_t;

static struct {
    PyObject *app;
    PyObject *loop;         /* the asyncio event loop */
    PyObject *create_task, *create_future;
    PyObject *task_type;    /* asyncio.Task, called directly unless the app set a task factory */
    PyObject *kw_loop;      /* ("loop",): the keyword names for Task(coro, loop=...) */
    PyObject *task_factory; /* loop.get_task_factory(), read once per batch of new requests */
    PyObject *scope_template_asgi;  /* {"version": "3.0", "spec_version": "2.4"} */
    PyObject *disconnect_event;
    PyObject *client_disconnected;  /* ponte.ClientDisconnected(OSError) */
    uv_loop_t *uvloop;
    uv_poll_t select_timer; /* a timerfd: asyncio's select timeout, to the microsecond */
    int select_tfd;
    bool select_armed;
    PyThreadState **main_ts;
    const pt_config_t *cfg;
    pt_event_t *events;
    size_t nevents, evcap;
    pt_poll_t **polls;      /* by file descriptor */
    size_t npolls;
    struct { int fd, mask; } *ready;
    size_t nready, readycap;
    bool stopped;
    uint64_t left_select;   /* when run_once last returned to asyncio (loop lag is measured from there) */
    bool serving;           /* run_forever is serving requests (not the start-up lifespan) */
    uv_async_t keepalive;   /* keeps libuv running while asyncio alone has work (lifespan); closed at exit */
    PyObject *lifespan;     /* the Lifespan object, when the app takes part */
    PyObject *state;        /* lifespan state, shallow-copied into each request scope */
    bool exit_pending;
    void (*exit_done)(void *arg);
    void *exit_arg;
} A;

/*
 * Strings every request uses, made once: dict keys built from C strings would be allocated and hashed anew each
 * time. Header names that most requests carry are shared the same way (bytes are immutable).
 */
static struct {
    PyObject *type, *body, *more_body, *status, *headers, *state;
    PyObject *asgi, *http_version, *method, *scheme, *path, *raw_path, *query_string, *root_path, *client, *server;
    PyObject *http, *http_request, *v1_0, *v1_1, *https, *root_path_value, *empty_bytes;
    PyObject *get, *post, *head;
} K;

static const char *const COMMON_HEADERS[] = {
    "host", "user-agent", "accept", "accept-encoding", "accept-language", "connection", "content-length",
    "content-type", "cookie", "referer", "origin", "authorization", "cache-control", "upgrade-insecure-requests",
    "x-forwarded-for", "x-forwarded-proto", "x-real-ip", "x-request-id", "if-none-match", "if-modified-since",
    "sec-fetch-mode", "sec-fetch-site", "sec-fetch-dest", "sec-ch-ua", "sec-ch-ua-mobile", "sec-ch-ua-platform",
    "dnt", "pragma", "te", "transfer-encoding", "expect", "range",
};
#define NCOMMON (sizeof(COMMON_HEADERS) / sizeof(COMMON_HEADERS[0]))
static PyObject *common_header_names[NCOMMON];

static int
keys_init(void)
{
    size_t i;

#define INTERN(field, text) if ((K.field = PyUnicode_InternFromString(text)) == NULL) return -1
    INTERN(type, "type");
    INTERN(body, "body");
    INTERN(more_body, "more_body");
    INTERN(status, "status");
    INTERN(headers, "headers");
    INTERN(state, "state");
    INTERN(asgi, "asgi");
    INTERN(http_version, "http_version");
    INTERN(method, "method");
    INTERN(scheme, "scheme");
    INTERN(path, "path");
    INTERN(raw_path, "raw_path");
    INTERN(query_string, "query_string");
    INTERN(root_path, "root_path");
    INTERN(client, "client");
    INTERN(server, "server");
    INTERN(http, "http");
    INTERN(http_request, "http.request");
    INTERN(v1_0, "1.0");
    INTERN(v1_1, "1.1");
    INTERN(https, "https");
    INTERN(get, "GET");
    INTERN(post, "POST");
    INTERN(head, "HEAD");
#undef INTERN
    K.root_path_value = PyUnicode_FromString(A.cfg->root_path);
    K.empty_bytes = PyBytes_FromStringAndSize(NULL, 0);
    if (K.root_path_value == NULL || K.empty_bytes == NULL) {
        return -1;
    }
    for (i = 0; i < NCOMMON; i++) {
        if ((common_header_names[i] = PyBytes_FromString(COMMON_HEADERS[i])) == NULL) {
            return -1;
        }
    }
    return 0;
}

/* ------------------------------------------------------------------------------------------------------------ */
/* An already-completed awaitable: `await` returns its value at once. */

typedef struct {
    PyObject_HEAD
    PyObject *value;
} pt_ready_t;

static void
ready_dealloc(pt_ready_t *self)
{
    Py_XDECREF(self->value);
    PyObject_Free(self);
}

static PyObject *
ready_await(PyObject *self)
{
    return Py_NewRef(self);
}

static PyObject *
ready_next(pt_ready_t *self)
{
    PyObject *exc;

    if (self->value == Py_None) {
        PyErr_SetNone(PyExc_StopIteration);
        return NULL;
    }
    exc = PyObject_CallOneArg(PyExc_StopIteration, self->value);
    if (exc != NULL) {
        PyErr_SetObject(PyExc_StopIteration, exc);
        Py_DECREF(exc);
    }
    return NULL;
}

static PyAsyncMethods ready_async = { .am_await = ready_await };

static PyTypeObject ready_type = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "ponte.Ready",
    .tp_basicsize = sizeof(pt_ready_t),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "An awaitable that is already complete.",
    .tp_dealloc = (destructor)ready_dealloc,
    .tp_as_async = &ready_async,
    .tp_iter = PyObject_SelfIter,
    .tp_iternext = (iternextfunc)ready_next,
};

/* Steals `value`. */
static PyObject *
ready_new(PyObject *value)
{
    pt_ready_t *r;

    if (value == NULL) {
        return NULL;
    }
    r = PyObject_New(pt_ready_t, &ready_type);
    if (r == NULL) {
        Py_DECREF(value);
        return NULL;
    }
    r->value = value;
    return (PyObject *)r;
}

/* ------------------------------------------------------------------------------------------------------------ */
/* Per-request context: the receive and send callables. */

struct pt_asgi_ctx_s {
    PyObject_HEAD
    pt_request_t *req;          /* NULL once the app is finished with it */
    uint64_t seq;
    uint64_t t0;                /* when the request started (for --gil-trace) */
    PyObject *receive, *send;               /* bound to this context */
    PyObject *task;                         /* the Task running the app: kept alive while the request is open */
    PyObject *recv_fut, *send_fut;          /* a receive()/send() waiting */
    PyObject *headers;                      /* list of (name, value) bytes from http.response.start */
    int status;
    bool started, head_sent, complete, body_done, disconnected;
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

/* Resolves a future unless it is already done (cancelled by the app). Steals `value` when given. */
static bool fut_done(PyObject *fut);

static void
fut_resolve(PyObject **slot, PyObject *value, PyObject *exc)
{
    PyObject *fut = *slot, *r = NULL;

    *slot = NULL;
    if (fut == NULL) {
        Py_XDECREF(value);
        return;
    }
    if (!fut_done(fut)) {
        r = exc ? PyObject_CallMethod(fut, "set_exception", "O", exc)
                : PyObject_CallMethod(fut, "set_result", "O", value ? value : Py_None);
        if (r == NULL) {
            pt_py_log_exception("cannot resolve an ASGI future", NULL);
        }
    }
    Py_XDECREF(r);
    Py_XDECREF(value);
    Py_DECREF(fut);
}

static bool
fut_done(PyObject *fut)
{
    PyObject *r = PyObject_CallMethod(fut, "done", NULL);
    bool done = r == NULL || PyObject_IsTrue(r);

    Py_XDECREF(r);
    PyErr_Clear();
    return done;
}

static PyObject *
disconnect_error(void)
{
    return PyObject_CallFunction(A.client_disconnected, "s", "client disconnected");
}

/* {"type": "http.request", "body": body, "more_body": more}. Steals `body`. New ref. */
static PyObject *
receive_event(PyObject *body, bool more)
{
    PyObject *ev = body ? PyDict_New() : NULL;

    if (ev == NULL || PyDict_SetItem(ev, K.type, K.http_request) < 0 || PyDict_SetItem(ev, K.body, body) < 0
        || PyDict_SetItem(ev, K.more_body, more ? Py_True : Py_False) < 0) {
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
        return Py_NewRef(A.disconnect_event);
    }
    if (!c->body_done && pt_req_body_complete(c->req)) {
        /* Nothing (more) to read, the common case for GET: no buffer to allocate. */
        c->body_done = true;
        return receive_event(Py_NewRef(K.empty_bytes), false);
    }
    if (c->body_done) {
        if (c->req->client_eof) {
            /* EOF after the body: like uvicorn, that is the disconnect (send() still works: it may read). */
            return Py_NewRef(A.disconnect_event);
        }
        return NULL;            /* the body is all delivered: the next event is the disconnect */
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
        c->disconnected = true;
        return Py_NewRef(A.disconnect_event);
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
        return ready_new(ev);
    }
    if (PyErr_Occurred()) {
        return NULL;
    }
    if (c->recv_fut != NULL && !fut_done(c->recv_fut)) {
        PyErr_SetString(PyExc_RuntimeError, "receive() awaited twice at the same time");
        return NULL;
    }
    Py_CLEAR(c->recv_fut);     /* a receive() the app cancelled (wait_for) */
    c->recv_fut = PyObject_CallNoArgs(A.create_future);
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
        fut_resolve(&c->recv_fut, ev, NULL);
    } else if (PyErr_Occurred()) {
        PyObject *type, *value, *tb;

        PyErr_Fetch(&type, &value, &tb);
        PyErr_NormalizeException(&type, &value, &tb);
        fut_resolve(&c->recv_fut, NULL, value);
        Py_XDECREF(type);
        Py_XDECREF(value);
        Py_XDECREF(tb);
    }
}

/* Validates http.response.start headers into a list of (bytes, bytes). New ref, or NULL with an exception. */
static PyObject *
check_headers(PyObject *headers)
{
    PyObject *list = PyList_New(0), *it, *item;

    if (list == NULL) {
        return NULL;
    }
    it = PyObject_GetIter(headers);
    if (it == NULL) {
        Py_DECREF(list);
        return NULL;
    }
    while ((item = PyIter_Next(it)) != NULL) {
        PyObject *seq = PySequence_Fast(item, "each header must be a [name, value] pair of bytes");
        PyObject *name, *value, *pair;

        Py_DECREF(item);
        if (seq == NULL) {
            goto error;
        }
        if (PySequence_Fast_GET_SIZE(seq) != 2) {
            Py_DECREF(seq);
            PyErr_SetString(PyExc_TypeError, "each header must be a [name, value] pair of bytes");
            goto error;
        }
        name = PySequence_Fast_GET_ITEM(seq, 0);
        value = PySequence_Fast_GET_ITEM(seq, 1);
        if (!PyBytes_Check(name) || !PyBytes_Check(value) || PyBytes_GET_SIZE(name) == 0) {
            Py_DECREF(seq);
            PyErr_SetString(PyExc_TypeError, "header names and values must be bytes (names non-empty)");
            goto error;
        }
        if (!pt_header_name_valid(PyBytes_AS_STRING(name), (size_t)PyBytes_GET_SIZE(name))) {
            PyErr_Format(PyExc_ValueError, "invalid character in header name %R", name);
            Py_DECREF(seq);
            goto error;
        }
        if (!pt_header_value_valid(PyBytes_AS_STRING(value), (size_t)PyBytes_GET_SIZE(value))) {
            PyErr_Format(PyExc_ValueError, "invalid character (CR, LF or control) in the value of header %R",
                         name);
            Py_DECREF(seq);
            goto error;
        }
        pair = PyTuple_Pack(2, name, value);
        Py_DECREF(seq);
        if (pair == NULL || PyList_Append(list, pair) < 0) {
            Py_XDECREF(pair);
            goto error;
        }
        Py_DECREF(pair);
    }
    if (PyErr_Occurred()) {
        goto error;
    }
    Py_DECREF(it);
    return list;
error:
    Py_DECREF(it);
    Py_DECREF(list);
    return NULL;
}

static int
write_head(pt_asgi_ctx_t *c, int64_t known_length)
{
    pt_request_t *req = c->req;
    Py_ssize_t i, n = PyList_GET_SIZE(c->headers);
    pt_resp_ctx_t rctx = { req->http_minor, req->is_head, req->keep_alive };
    char line[64];

    if ((size_t)n > c->hcap) {
        pt_header_t *h = PyMem_Realloc(c->hspans, (size_t)n * sizeof(*h));

        if (h == NULL) {
            PyErr_NoMemory();
            return -1;
        }
        c->hspans = h;
        c->hcap = (size_t)n;
    }
    for (i = 0; i < n; i++) {
        PyObject *pair = PyList_GET_ITEM(c->headers, i);
        PyObject *k = PyTuple_GET_ITEM(pair, 0), *v = PyTuple_GET_ITEM(pair, 1);

        c->hspans[i].name = (pt_span_t){ PyBytes_AS_STRING(k), (size_t)PyBytes_GET_SIZE(k) };
        c->hspans[i].value = (pt_span_t){ PyBytes_AS_STRING(v), (size_t)PyBytes_GET_SIZE(v) };
    }
    snprintf(line, sizeof(line), "%d %s", c->status, pt_status_reason(c->status));
    if (pt_resp_head(&req->resp, &rctx, &c->out, (pt_span_t){ line, strlen(line) }, c->hspans, (size_t)n,
                     known_length) < 0) {
        PyErr_NoMemory();
        return -1;
    }
    c->head_sent = true;
    return 0;
}

static PyObject *
ctx_send(pt_asgi_ctx_t *c, PyObject *event)
{
    PyObject *type;
    unsigned flags = 0;

    if (!PyDict_Check(event)) {
        PyErr_Format(PyExc_TypeError, "send() takes a dict event, not %.100s", Py_TYPE(event)->tp_name);
        return NULL;
    }
    type = PyDict_GetItemWithError(event, K.type);      /* borrowed */
    if (type == NULL && PyErr_Occurred()) {
        return NULL;
    }
    if (type == NULL || !PyUnicode_Check(type)) {
        PyErr_SetString(PyExc_ValueError, "ASGI event without a 'type'");
        return NULL;
    }
    if (c->req == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "send() after the request finished");
        return NULL;
    }
    if (c->disconnected || pt_req_gone(c->req)) {
        c->disconnected = true;
        PyErr_SetString(A.client_disconnected, "client disconnected");
        return NULL;
    }
    if (PyUnicode_CompareWithASCIIString(type, "http.response.start") == 0) {
        PyObject *status = PyDict_GetItemWithError(event, K.status);
        PyObject *headers = status ? PyDict_GetItemWithError(event, K.headers) : NULL;
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
        if (headers == NULL && PyErr_Occurred()) {
            return NULL;
        }
        c->headers = headers ? check_headers(headers) : PyList_New(0);
        if (c->headers == NULL) {
            return NULL;
        }
        c->status = (int)code;
        c->started = true;
        return ready_new(Py_NewRef(Py_None));
    }
    if (PyUnicode_CompareWithASCIIString(type, "http.response.body") == 0) {
        PyObject *body = PyDict_GetItemWithError(event, K.body);
        PyObject *more = body || !PyErr_Occurred() ? PyDict_GetItemWithError(event, K.more_body) : NULL;
        int more_body = more == NULL ? 0 : PyObject_IsTrue(more);

        if (PyErr_Occurred()) {
            return NULL;
        }
        Py_buffer view = { 0 };

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
        if (!c->head_sent && write_head(c, more_body ? -1 : (int64_t)view.len) < 0) {
            PyBuffer_Release(&view);
            return NULL;
        }
        if (view.len > 0 && pt_resp_body(&c->req->resp, &c->out, view.buf, (size_t)view.len) < 0) {
            PyBuffer_Release(&view);
            return PyErr_NoMemory();
        }
        PyBuffer_Release(&view);
        if (!more_body) {
            pt_resp_end(&c->req->resp, &c->out);
            c->complete = true;
            flags = PT_SEND_END;
        }
        if (pt_req_send(c->req, &c->out, flags) < 0) {
            c->disconnected = true;
            PyErr_SetString(A.client_disconnected, "client disconnected");
            return NULL;
        }
        if (c->complete) {
            ctx_wake_receive(c);    /* http.disconnect for a receive() waiting past the response */
        } else if (pt_req_must_wait(c->req)) {
            /* A slow client: this send() completes when the queue drains (on_drain). */
            Py_XSETREF(c->send_fut, PyObject_CallNoArgs(A.create_future));
            if (c->send_fut == NULL) {
                return NULL;
            }
            pt_req_suspend(c->req);
            return Py_NewRef(c->send_fut);
        }
        return ready_new(Py_NewRef(Py_None));
    }
    PyErr_Format(PyExc_ValueError, "unexpected ASGI message type %R for an http scope", type);
    return NULL;
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
            pt_resp_ctx_t rctx = { req->http_minor, req->is_head, req->keep_alive };

            c->out.len = 0;
            memset(&req->resp, 0, sizeof(req->resp));
            if (pt_resp_error(&req->resp, &rctx, &c->out, pt_req_error_status(req)) < 0) {
                c->out.len = 0;
            }
            flags |= PT_SEND_END;
        } else {
            flags |= PT_SEND_ABORT;     /* the head is out: only closing tells the client the body is cut */
        }
    }
    if (pt_gil_tracing()) {
        char label[64];

        snprintf(label, sizeof(label), "%.*s %.*s", (int)req->method.len, req->method.base, (int)req->target.len,
                 req->target.base);
        pt_gil_trace_request(c->t0, label);
    }
    c->req = NULL;
    owned = req->app_data == c;
    req->app_data = NULL;
    pt_req_send(req, &c->out, flags);
    fut_resolve(&c->recv_fut, NULL, NULL);
    fut_resolve(&c->send_fut, NULL, NULL);
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
ctx_ended(pt_asgi_ctx_t *c, PyObject *exc)
{
    pt_request_t *req = c->req;

    if (req == NULL) {
        return;
    }
    if (exc == NULL) {
        if (!c->complete) {
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

/* ------------------------------------------------------------------------------------------------------------ */
/*
 * The app's coroutine as its Task runs it. This wrapper passes every step through, and finishes the request the
 * moment the coroutine ends, inside the step that ended it. asyncio's done callback would cost a Handle and one
 * more loop turn per request. An exception from the app is logged and answered with 500 here, and the Task ends
 * normally (nobody awaits it, so asyncio would only complain that its exception was never retrieved). A
 * CancelledError, KeyboardInterrupt or SystemExit is passed on to the Task as it came.
 */

typedef struct {
    PyObject_HEAD
    PyObject *coro;             /* the app's coroutine */
    pt_asgi_ctx_t *ctx;
} pt_run_t;

static int
run_traverse(pt_run_t *r, visitproc visit, void *arg)
{
    Py_VISIT(r->coro);
    Py_VISIT(r->ctx);
    return 0;
}

static int
run_clear(pt_run_t *r)
{
    Py_CLEAR(r->coro);
    Py_CLEAR(r->ctx);
    return 0;
}

static void
run_dealloc(pt_run_t *r)
{
    PyObject_GC_UnTrack(r);
    run_clear(r);
    PyObject_GC_Del(r);
}

/* After a step of the app's coroutine: PYGEN_NEXT passes through; an end finishes the request. */
static PySendResult
run_after(pt_run_t *r, PySendResult status, PyObject **result)
{
    PyObject *type, *exc, *tb;

    if (status == PYGEN_NEXT) {
        return status;
    }
    if (status == PYGEN_RETURN) {
        Py_DECREF(*result);             /* an ASGI app's return value means nothing */
        *result = Py_NewRef(Py_None);
        ctx_ended(r->ctx, NULL);
        return PYGEN_RETURN;
    }
    *result = NULL;
    PyErr_Fetch(&type, &exc, &tb);
    PyErr_NormalizeException(&type, &exc, &tb);
    if (exc == NULL) {
        Py_XDECREF(type);
        Py_XDECREF(tb);
        ctx_ended(r->ctx, NULL);
        return PYGEN_ERROR;     /* unreachable in practice: an error without an exception */
    }
    if (tb != NULL) {
        PyException_SetTraceback(exc, tb);
    }
    if (PyErr_GivenExceptionMatches(exc, PyExc_Exception)) {
        ctx_ended(r->ctx, exc);
        Py_XDECREF(type);
        Py_DECREF(exc);
        Py_XDECREF(tb);
        *result = Py_NewRef(Py_None);
        return PYGEN_RETURN;
    }
    ctx_ended(r->ctx, exc);
    PyErr_Restore(type, exc, tb);
    return PYGEN_ERROR;
}

static PySendResult
run_am_send(pt_run_t *r, PyObject *arg, PyObject **result)
{
    return run_after(r, PyIter_Send(r->coro, arg, result), result);
}

/* The PySendResult protocol back to the iterator one: a value, or NULL with StopIteration or an error set. */
static PyObject *
run_result(PySendResult status, PyObject *result)
{
    if (status == PYGEN_NEXT) {
        return result;
    }
    if (status == PYGEN_RETURN) {
        if (result == Py_None) {
            PyErr_SetNone(PyExc_StopIteration);
        } else {
            PyObject *e = PyObject_CallOneArg(PyExc_StopIteration, result);

            if (e != NULL) {
                PyErr_SetObject(PyExc_StopIteration, e);
                Py_DECREF(e);
            }
        }
        Py_DECREF(result);
    }
    return NULL;
}

static PyObject *
run_send(pt_run_t *r, PyObject *arg)
{
    PyObject *result;
    PySendResult status = run_am_send(r, arg, &result);

    return run_result(status, result);
}

static PyObject *
run_next(pt_run_t *r)
{
    return run_send(r, Py_None);
}

static PyObject *
run_throw(pt_run_t *r, PyObject *args)
{
    PyObject *meth = PyObject_GetAttrString(r->coro, "throw");
    PyObject *result = meth ? PyObject_Call(meth, args, NULL) : NULL;
    PySendResult status = PYGEN_NEXT;

    Py_XDECREF(meth);
    if (result == NULL) {
        status = PYGEN_ERROR;
        if (PyErr_ExceptionMatches(PyExc_StopIteration)) {
            PyObject *type, *exc, *tb;

            PyErr_Fetch(&type, &exc, &tb);
            PyErr_NormalizeException(&type, &exc, &tb);
            result = exc ? PyObject_GetAttrString(exc, "value") : NULL;
            Py_XDECREF(type);
            Py_XDECREF(exc);
            Py_XDECREF(tb);
            if (result == NULL) {
                PyErr_Clear();
                result = Py_NewRef(Py_None);
            }
            status = PYGEN_RETURN;
        }
    }
    status = run_after(r, status, &result);
    return run_result(status, result);
}

static PyObject *
run_close(pt_run_t *r, PyObject *unused)
{
    PyObject *res = PyObject_CallMethod(r->coro, "close", NULL);

    if (r->ctx->req != NULL) {
        pt_request_t *req = r->ctx->req;

        pt_log_warning("ASGI app coroutine for \"%.*s %.*s\" was closed before it ended", (int)req->method.len,
                       req->method.base, (int)req->target.len, req->target.base);
        ctx_finish(r->ctx);
    }
    return res;
}

static PyObject *
run_await(PyObject *self)
{
    return Py_NewRef(self);
}

/* Introspection (Task.get_stack, reprs, debuggers) sees the app's coroutine. */
static PyObject *
run_getattr_coro(pt_run_t *r, void *name)
{
    return PyObject_GetAttrString(r->coro, (const char *)name);
}

static PyMethodDef run_methods[] = {
    { "send", (PyCFunction)run_send, METH_O, "send(value): run the app until it next waits" },
    { "throw", (PyCFunction)run_throw, METH_VARARGS, "throw(exc): raise exc where the app waits" },
    { "close", (PyCFunction)run_close, METH_NOARGS, "close(): close the app's coroutine" },
    { NULL },
};

static PyGetSetDef run_getset[] = {
    { "__name__", (getter)run_getattr_coro, NULL, NULL, "__name__" },
    { "__qualname__", (getter)run_getattr_coro, NULL, NULL, "__qualname__" },
    { "cr_code", (getter)run_getattr_coro, NULL, NULL, "cr_code" },
    { "cr_frame", (getter)run_getattr_coro, NULL, NULL, "cr_frame" },
    { "cr_await", (getter)run_getattr_coro, NULL, NULL, "cr_await" },
    { "cr_running", (getter)run_getattr_coro, NULL, NULL, "cr_running" },
    { NULL },
};

static PyAsyncMethods run_async = { .am_await = run_await, .am_send = (sendfunc)run_am_send };

static PyTypeObject run_type = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "ponte.ASGIAppRun",
    .tp_basicsize = sizeof(pt_run_t),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_doc = "The ASGI app's coroutine, finishing its request the moment it ends.",
    .tp_dealloc = (destructor)run_dealloc,
    .tp_traverse = (traverseproc)run_traverse,
    .tp_clear = (inquiry)run_clear,
    .tp_as_async = &run_async,
    .tp_iter = PyObject_SelfIter,
    .tp_iternext = (iternextfunc)run_next,
    .tp_methods = run_methods,
    .tp_getset = run_getset,
};

/*
 * A Task for the wrapped coroutine: asyncio.Task called directly (loop.create_task adds a Python frame), unless
 * the app has set a task factory. A.task_factory is read (get_task_factory(), public API) once per batch of new
 * requests: only Python code can change it, and none runs within a batch but the apps' constructors.
 */
static PyObject *
run_task(PyObject *run)
{
    if (A.task_factory == Py_None) {
        PyObject *args[2] = { run, A.loop };

        return PyObject_Vectorcall(A.task_type, args, 1, A.kw_loop);
    }
    return PyObject_CallOneArg(A.create_task, run);
}

static PyMethodDef receive_def = { "receive", (PyCFunction)ctx_receive, METH_NOARGS, "ASGI receive()" };
static PyMethodDef send_def = { "send", (PyCFunction)ctx_send, METH_O, "ASGI send(event)" };

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

/* ------------------------------------------------------------------------------------------------------------ */
/* Scope */

/* scope["path"]: percent-decoded, as UTF-8. New ref. */
static PyObject *
decode_path(pt_span_t path)
{
    char *buf = PyMem_Malloc(path.len + 1);
    PyObject *s;

    if (buf == NULL) {
        return PyErr_NoMemory();
    }
    s = PyUnicode_DecodeUTF8(buf, (Py_ssize_t)pt_percent_decode(path.base, path.len, buf), "replace");
    PyMem_Free(buf);
    return s;
}

/* A header name as ASGI wants it: lower-case bytes, shared when it is a common one. New ref. */
static PyObject *
header_name(pt_span_t n)
{
    PyObject *name;
    size_t i;

    for (i = 0; i < NCOMMON; i++) {
        PyObject *k = common_header_names[i];

        if ((size_t)PyBytes_GET_SIZE(k) == n.len && strncasecmp(PyBytes_AS_STRING(k), n.base, n.len) == 0) {
            return Py_NewRef(k);
        }
    }
    name = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)n.len);
    if (name != NULL) {
        for (i = 0; i < n.len; i++) {
            PyBytes_AS_STRING(name)[i] = (char)tolower((unsigned char)n.base[i]);
        }
    }
    return name;
}

static PyObject *
build_headers(const pt_request_t *req)
{
    PyObject *list = PyList_New((Py_ssize_t)req->nheaders);
    size_t i;

    if (list == NULL) {
        return NULL;
    }
    for (i = 0; i < req->nheaders; i++) {
        const pt_header_t *h = &req->headers[i];
        PyObject *name = header_name(h->name);
        PyObject *value = name ? PyBytes_FromStringAndSize(h->value.base, (Py_ssize_t)h->value.len) : NULL;
        PyObject *pair = value ? PyTuple_Pack(2, name, value) : NULL;

        Py_XDECREF(name);
        Py_XDECREF(value);
        if (pair == NULL) {
            Py_DECREF(list);
            return NULL;
        }
        PyList_SET_ITEM(list, (Py_ssize_t)i, pair);     /* steals */
    }
    return list;
}

static PyObject *
method_str(pt_span_t m)
{
    if (m.len == 3 && memcmp(m.base, "GET", 3) == 0) {
        return Py_NewRef(K.get);
    }
    if (m.len == 4 && memcmp(m.base, "POST", 4) == 0) {
        return Py_NewRef(K.post);
    }
    if (m.len == 4 && memcmp(m.base, "HEAD", 4) == 0) {
        return Py_NewRef(K.head);
    }
    return PyUnicode_DecodeLatin1(m.base, (Py_ssize_t)m.len, NULL);
}

/* scope[key] = value, stealing value. */
static int
scope_set(PyObject *scope, PyObject *key, PyObject *value)
{
    int r = value ? PyDict_SetItem(scope, key, value) : -1;

    Py_XDECREF(value);
    return r;
}

static PyObject *
build_scope(const pt_request_t *req)
{
    PyObject *scope = _PyDict_NewPresized(A.state ? 13 : 12);

    if (scope == NULL
        || PyDict_SetItem(scope, K.type, K.http) < 0
        || PyDict_SetItem(scope, K.asgi, A.scope_template_asgi) < 0
        || PyDict_SetItem(scope, K.http_version, req->http_minor ? K.v1_1 : K.v1_0) < 0
        || scope_set(scope, K.method, method_str(req->method)) < 0
        || scope_set(scope, K.scheme, strcmp(req->url_scheme, "https") == 0 ? Py_NewRef(K.https)
                                                                          : Py_NewRef(K.http)) < 0
        || scope_set(scope, K.path, decode_path(req->path)) < 0
        || scope_set(scope, K.raw_path, PyBytes_FromStringAndSize(req->path.base, (Py_ssize_t)req->path.len)) < 0
        || scope_set(scope, K.query_string,
                     PyBytes_FromStringAndSize(req->query.base, (Py_ssize_t)req->query.len)) < 0
        || PyDict_SetItem(scope, K.root_path, K.root_path_value) < 0
        || scope_set(scope, K.headers, build_headers(req)) < 0
        || scope_set(scope, K.client, Py_BuildValue("(si)", req->remote_addr, req->remote_port)) < 0
        || scope_set(scope, K.server, Py_BuildValue("(si)", req->server_name, req->server_port)) < 0
        || (A.state != NULL && scope_set(scope, K.state, PyDict_Copy(A.state)) < 0)) {
        Py_XDECREF(scope);
        return NULL;
    }
    return scope;
}

/* ------------------------------------------------------------------------------------------------------------ */
/* Events from the server (queued without the GIL, handled in run_once with it) */

static void
queue_event(pt_event_kind_t kind, pt_request_t *req)
{
    if (A.nevents == A.evcap) {
        size_t cap = A.evcap ? A.evcap * 2 : 64;
        pt_event_t *e = realloc(A.events, cap * sizeof(*e));

        if (e == NULL) {
            pt_log_error("out of memory queueing an ASGI event");
            abort();
        }
        A.events = e;
        A.evcap = cap;
    }
    A.events[A.nevents++] = (pt_event_t){ kind, req, req->seq };
}

static void
asgi_start(pt_request_t *req)
{
    pt_asgi_ctx_t *c = PyObject_GC_New(pt_asgi_ctx_t, &ctx_type);
    pt_run_t *run = NULL;
    PyObject *scope = NULL, *coro = NULL;

    if (c == NULL) {
        goto fail;
    }
    c->req = NULL;
    c->seq = req->seq;
    c->t0 = pt_gil_now();
    c->task = c->recv_fut = c->send_fut = c->headers = NULL;
    c->status = 0;
    c->started = c->head_sent = c->complete = c->body_done = c->disconnected = false;
    c->out = (pt_buf_t){ 0 };
    c->hspans = NULL;
    c->hcap = 0;
    c->receive = PyCFunction_New(&receive_def, (PyObject *)c);
    c->send = PyCFunction_New(&send_def, (PyObject *)c);
    PyObject_GC_Track(c);
    if (c->receive == NULL || c->send == NULL) {
        goto fail;
    }
    /* The request owns a reference until ctx_finish: that keeps the context, and through c->task the Task,
     * alive while the app waits on a future that only this context knows (a receive() waiting for the body),
     * where the garbage collector would otherwise find them an unreachable cycle. */
    c->req = req;
    req->app_data = Py_NewRef(c);
    scope = build_scope(req);
    if (scope == NULL) {
        goto fail;
    }
    if (A.cfg->interface == PT_IFACE_ASGI2) {
        /* ASGI 2: app(scope) builds an instance, instance(receive, send) is the coroutine. */
        PyObject *instance = PyObject_CallOneArg(A.app, scope);

        coro = instance ? PyObject_CallFunctionObjArgs(instance, c->receive, c->send, NULL) : NULL;
        Py_XDECREF(instance);
    } else {
        PyObject *args[3] = { scope, c->receive, c->send };

        coro = PyObject_Vectorcall(A.app, args, 3, NULL);
    }
    if (coro == NULL) {
        goto fail;
    }
    run = PyObject_GC_New(pt_run_t, &run_type);
    if (run == NULL) {
        goto fail;
    }
    run->coro = coro;           /* steals */
    coro = NULL;
    run->ctx = (pt_asgi_ctx_t *)Py_NewRef(c);
    PyObject_GC_Track(run);
    c->task = run_task((PyObject *)run);
    if (c->task == NULL) {
        goto fail;
    }
    Py_DECREF(run);
    Py_DECREF(scope);
    Py_DECREF(c);
    return;
fail:
    pt_py_log_exception("cannot start the ASGI app", req);
    Py_XDECREF(run);
    Py_XDECREF(coro);
    Py_XDECREF(scope);
    if (c != NULL) {
        c->req = req;
        ctx_finish(c);      /* 500 */
        Py_DECREF(c);
    } else {
        pt_buf_t out = { 0 };

        pt_req_send(req, &out, PT_SEND_ABORT | PT_SEND_DONE);
    }
}

static void
process_events(void)
{
    size_t i;

    for (i = 0; i < A.nevents && A.events[i].kind != EV_START; i++) {
    }
    if (i < A.nevents) {
        PyObject *f = PyObject_CallMethod(A.loop, "get_task_factory", NULL);

        Py_XSETREF(A.task_factory, f != NULL ? f : Py_NewRef(Py_None));
        if (f == NULL) {
            pt_py_log_exception("cannot read the asyncio task factory", NULL);
        }
    }
    /* Handlers may queue more (a send failing closes a connection): take the batch first. */
    for (i = 0; i < A.nevents; i++) {
        pt_event_t ev = A.events[i];
        pt_asgi_ctx_t *c;

        if (ev.req->seq != ev.seq) {
            continue;           /* the request was finished and its connection reused since */
        }
        if (ev.kind == EV_START) {
            asgi_start(ev.req);
            continue;
        }
        c = ev.req->app_data;
        if (c == NULL) {
            continue;
        }
        switch (ev.kind) {
        case EV_BODY:
            ctx_wake_receive(c);
            break;
        case EV_DRAIN:
            fut_resolve(&c->send_fut, NULL, NULL);
            break;
        case EV_GONE: {
            PyObject *err = disconnect_error();

            c->disconnected = true;
            ctx_wake_receive(c);
            if (err != NULL) {
                fut_resolve(&c->send_fut, NULL, err);
                Py_DECREF(err);
            }
            break;
        }
        default:
            break;
        }
    }
    A.nevents = 0;
}

static PyObject *
exit_done(PyObject *self, PyObject *task)
{
    if (A.exit_done != NULL) {
        void (*done)(void *) = A.exit_done;

        A.exit_done = NULL;
        done(A.exit_arg);
    }
    Py_RETURN_NONE;
}

static PyMethodDef exit_done_def = { "_exit_done", exit_done, METH_O, "lifespan shutdown finished" };

/* Runs lifespan.shutdown, then lets the server end the loop. GIL held (from run_once). */
static void
start_exit(void)
{
    PyObject *coro = NULL, *task = NULL, *cb = NULL, *r = NULL;

    A.exit_pending = false;
    if (A.lifespan != NULL) {
        coro = PyObject_CallMethod(A.lifespan, "shutdown", NULL);
        task = coro ? PyObject_CallOneArg(A.create_task, coro) : NULL;
        cb = task ? PyCFunction_New(&exit_done_def, NULL) : NULL;
        r = cb ? PyObject_CallMethod(task, "add_done_callback", "O", cb) : NULL;
    }
    if (r == NULL) {
        if (PyErr_Occurred()) {
            pt_py_log_exception("cannot run the ASGI lifespan shutdown", NULL);
        }
        exit_done(NULL, NULL);
    }
    Py_XDECREF(r);
    Py_XDECREF(cb);
    Py_XDECREF(task);
    Py_XDECREF(coro);
}

static void
asgi_before_exit(pt_app_t *app, void (*done)(void *arg), void *arg)
{
    /* Called inside uv_run without the GIL: run_once starts the shutdown once it has the GIL back. */
    A.exit_done = done;
    A.exit_arg = arg;
    A.exit_pending = true;
}

static void
asgi_on_request(pt_app_t *app, pt_request_t *req)
{
    queue_event(EV_START, req);
}

static void
asgi_on_body(pt_app_t *app, pt_request_t *req)
{
    queue_event(EV_BODY, req);
}

static void
asgi_on_drain(pt_app_t *app, pt_request_t *req)
{
    queue_event(EV_DRAIN, req);
}

static void
asgi_on_gone(pt_app_t *app, pt_request_t *req)
{
    queue_event(EV_GONE, req);
}

/* ------------------------------------------------------------------------------------------------------------ */
/* _ponte: what LibuvSelector calls */

static void
on_poll(uv_poll_t *h, int status, int events)
{
    pt_poll_t *p = h->data;
    int mask = 0;
    size_t i;

    if (status < 0) {
        mask = p->events;       /* let asyncio find the error on its next read or write */
    } else {
        mask = ((events & UV_READABLE) ? 1 : 0) | ((events & UV_WRITABLE) ? 2 : 0);
    }
    for (i = 0; i < A.nready; i++) {
        if (A.ready[i].fd == p->fd) {
            A.ready[i].mask |= mask;
            return;
        }
    }
    if (A.nready == A.readycap) {
        size_t cap = A.readycap ? A.readycap * 2 : 32;
        void *r = realloc(A.ready, cap * sizeof(*A.ready));

        if (r == NULL) {
            return;             /* level-triggered: it is reported again next time */
        }
        A.ready = r;
        A.readycap = cap;
    }
    A.ready[A.nready].fd = p->fd;
    A.ready[A.nready].mask = mask;
    A.nready++;
}

static void
on_poll_close(uv_handle_t *h)
{
    free(h->data);
}

static PyObject *
mod_poll_start(PyObject *mod, PyObject *args)
{
    int fd, events, r;
    pt_poll_t *p;

    if (!PyArg_ParseTuple(args, "ii:poll_start", &fd, &events)) {
        return NULL;
    }
    if ((size_t)fd >= A.npolls) {
        size_t n = (size_t)fd + 64;
        pt_poll_t **np = realloc(A.polls, n * sizeof(*np));

        if (np == NULL) {
            return PyErr_NoMemory();
        }
        memset(np + A.npolls, 0, (n - A.npolls) * sizeof(*np));
        A.polls = np;
        A.npolls = n;
    }
    p = A.polls[fd];
    if (p == NULL) {
        p = calloc(1, sizeof(*p));
        if (p == NULL) {
            return PyErr_NoMemory();
        }
        r = uv_poll_init(A.uvloop, &p->h, fd);
        if (r < 0) {
            free(p);
            PyErr_Format(PyExc_OSError, "cannot watch fd %d: %s", fd, uv_strerror(r));
            return NULL;
        }
        p->h.data = p;
        p->fd = fd;
        /* asyncio's descriptors alone must not keep libuv running once the server has stopped. */
        uv_unref((uv_handle_t *)&p->h);
        A.polls[fd] = p;
    }
    p->events = events;
    r = uv_poll_start(&p->h, ((events & 1) ? UV_READABLE : 0) | ((events & 2) ? UV_WRITABLE : 0), on_poll);
    if (r < 0) {
        PyErr_Format(PyExc_OSError, "cannot watch fd %d: %s", fd, uv_strerror(r));
        return NULL;
    }
    Py_RETURN_NONE;
}

static PyObject *
mod_poll_stop(PyObject *mod, PyObject *arg)
{
    int fd = _PyLong_AsInt(arg);
    size_t i;

    if (fd == -1 && PyErr_Occurred()) {
        return NULL;
    }
    if (fd >= 0 && (size_t)fd < A.npolls && A.polls[fd] != NULL) {
        pt_poll_t *p = A.polls[fd];

        A.polls[fd] = NULL;
        if (!uv_is_closing((uv_handle_t *)&p->h)) {
            uv_close((uv_handle_t *)&p->h, on_poll_close);
        }
        for (i = 0; i < A.nready; i++) {
            if (A.ready[i].fd == fd) {
                A.ready[i] = A.ready[--A.nready];
                break;
            }
        }
    }
    Py_RETURN_NONE;
}

/*
 * asyncio's select timeout, on a timerfd rather than a libuv timer. libuv counts whole milliseconds, so a 10 ms
 * asyncio.sleep woke 0 to 2 ms late, and every sleeper due within that window woke in one batch: with 64 clients
 * sleeping 10 ms each, that lateness was a fifth of the throughput. The timerfd fires at the microsecond asyncio
 * asked for, so each sleeper wakes on its own turn.
 *
 * The timer may fall due at the top of the very libuv iteration it was meant to bound; uv_stop then makes that
 * iteration's poll non-blocking, where a do-nothing callback would let the poll sleep until the next unrelated
 * timer (the log flush, up to a second).
 */
static void
on_select_timer(uv_poll_t *p, int status, int events)
{
    uint64_t expirations;

    (void)status;
    (void)events;
    while (read(A.select_tfd, &expirations, sizeof expirations) < 0 && errno == EINTR) {
    }
    if (A.select_armed) {
        A.select_armed = false;
        uv_stop(p->loop);
    }
}

/* Arm the timerfd for `timeout` seconds from now (absolute, so time spent until the poll does not add up). */
static void
select_timer_arm(double timeout)
{
    struct itimerspec its = { { 0, 0 }, { 0, 0 } };
    struct timespec now;
    long long ns;

    clock_gettime(CLOCK_MONOTONIC, &now);          /* asyncio's loop.time() is this clock too */
    ns = (long long)now.tv_nsec + (long long)(timeout * 1e9);
    its.it_value.tv_sec = now.tv_sec + (time_t)(ns / 1000000000LL);
    its.it_value.tv_nsec = (long)(ns % 1000000000LL);
    if (timerfd_settime(A.select_tfd, TFD_TIMER_ABSTIME, &its, NULL) == 0) {
        A.select_armed = true;
    }
}

static void
select_timer_disarm(void)
{
    struct itimerspec off = { { 0, 0 }, { 0, 0 } };

    if (A.select_armed && timerfd_settime(A.select_tfd, 0, &off, NULL) == 0) {
        A.select_armed = false;
    }
}

static PyObject *
mod_run_once(PyObject *mod, PyObject *arg)
{
    double timeout = -1;
    PyThreadState *ts;
    PyObject *list;
    int alive;
    size_t i;

    if (arg != Py_None) {
        timeout = PyFloat_AsDouble(arg);
        if (timeout == -1 && PyErr_Occurred()) {
            return NULL;
        }
        if (timeout < 0) {
            timeout = 0;
        }
    }
    if (A.nevents > 0 || A.exit_pending) {
        timeout = 0;            /* work queued while Python ran: do not block before handling it */
    }
    if (A.left_select != 0) {
        pt_gil_loop_busy(pt_gil_now() - A.left_select);     /* how long asyncio ran callbacks since */
    }
    A.nready = 0;
    if (timeout > 0) {
        select_timer_arm(timeout);
    } else if (timeout < 0) {
        select_timer_disarm();      /* no asyncio timer left: a stale deadline would only wake the loop for nothing */
    }
    ts = pt_gil_release();
    alive = uv_run(A.uvloop, timeout == 0 ? UV_RUN_NOWAIT : UV_RUN_ONCE);
    pt_gil_acquire(ts);
    process_events();
    if (A.exit_pending) {
        start_exit();
    }
    if (!alive && A.serving && !A.stopped) {
        /* The server has shut down (every handle closed): end asyncio's run_forever too. */
        PyObject *r = PyObject_CallMethod(A.loop, "stop", NULL);

        Py_XDECREF(r);
        A.stopped = true;
    }
    list = PyList_New((Py_ssize_t)A.nready);
    if (list == NULL) {
        return NULL;
    }
    for (i = 0; i < A.nready; i++) {
        PyObject *t = Py_BuildValue("(ii)", A.ready[i].fd, A.ready[i].mask);

        if (t == NULL) {
            Py_DECREF(list);
            return NULL;
        }
        PyList_SET_ITEM(list, (Py_ssize_t)i, t);
    }
    A.left_select = pt_gil_now();
    return list;
}

static PyObject *
mod_log(PyObject *mod, PyObject *args)
{
    int level;
    const char *msg;

    if (!PyArg_ParseTuple(args, "is:log", &level, &msg)) {
        return NULL;
    }
    if (level < PT_LOG_DEBUG || level > PT_LOG_CRITICAL) {
        level = PT_LOG_INFO;
    }
    pt_log((pt_log_level_t)level, "%s", msg);
    Py_RETURN_NONE;
}

static PyMethodDef mod_methods[] = {
    { "log", mod_log, METH_VARARGS, "log(level, message): 0 debug, 1 info, 2 warning, 3 error" },
    { "poll_start", mod_poll_start, METH_VARARGS, "poll_start(fd, events): watch fd in libuv" },
    { "poll_stop", mod_poll_stop, METH_O, "poll_stop(fd)" },
    { "run_once", mod_run_once, METH_O, "run_once(timeout) -> [(fd, events)]: one libuv iteration" },
    { NULL, NULL, 0, NULL },
};

static struct PyModuleDef mod_def = {
    PyModuleDef_HEAD_INIT, "_ponte", "ponte's libuv loop, for asyncio's selector.", -1, mod_methods,
    NULL, NULL, NULL, NULL,
};

/* ------------------------------------------------------------------------------------------------------------ */
/* Start-up and the run hook */

static int
asgi_run(pt_app_t *app, uv_loop_t *loop)
{
    PyObject *r;

    pt_gil_acquire(*A.main_ts);
    A.serving = true;
    r = PyObject_CallMethod(A.loop, "run_forever", NULL);
    if (r == NULL) {
        pt_py_log_exception("the asyncio loop stopped with an error", NULL);
    }
    Py_XDECREF(r);
    *A.main_ts = pt_gil_release();
    /* Close callbacks of what the walk closed still have to run. */
    uv_run(loop, UV_RUN_NOWAIT);
    return 0;
}

/* Runs lifespan.startup to its end before the server listens. Returns 0, or -1 after logging why not. */
static int
run_startup(PyObject *ns, const pt_config_t *cfg)
{
    PyObject *cls = PyDict_GetItemString(ns, "Lifespan");   /* borrowed */
    PyObject *ls, *coro, *ok;
    int r = -1;

    ls = cls ? PyObject_CallFunction(cls, "OsO", A.app, cfg->lifespan == PT_LIFESPAN_ON ? "on" : "auto",
                                     cfg->interface == PT_IFACE_ASGI2 ? Py_True : Py_False) : NULL;
    coro = ls ? PyObject_CallMethod(ls, "startup", NULL) : NULL;
    ok = coro ? PyObject_CallMethod(A.loop, "run_until_complete", "O", coro) : NULL;
    if (ok == NULL) {
        pt_py_log_exception("ASGI lifespan startup failed", NULL);
    } else if (PyObject_IsTrue(ok)) {
        PyObject *supported = PyObject_GetAttrString(ls, "supported");

        if (supported != NULL && PyObject_IsTrue(supported)) {
            A.lifespan = Py_NewRef(ls);
            A.state = PyObject_GetAttrString(ls, "state");
        }
        Py_XDECREF(supported);
        PyErr_Clear();
        r = 0;
    }
    Py_XDECREF(ok);
    Py_XDECREF(coro);
    Py_XDECREF(ls);
    return r;
}

int
pt_asgi_setup(pt_app_t *base, PyObject *app, const pt_config_t *cfg, uv_loop_t *loop, PyThreadState **main_ts)
{
    PyObject *mod, *modules, *code, *ns = NULL, *selector_cls, *selector = NULL, *asyncio = NULL, *r;

    if (PyType_Ready(&ready_type) < 0 || PyType_Ready(&ctx_type) < 0 || PyType_Ready(&run_type) < 0) {
        return -1;
    }
    A.app = Py_NewRef(app);
    A.cfg = cfg;
    if (keys_init() < 0) {
        return -1;
    }
    A.uvloop = loop;
    A.main_ts = main_ts;
    A.select_tfd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
    if (A.select_tfd < 0 || uv_poll_init(loop, &A.select_timer, A.select_tfd) != 0) {
        PyErr_SetFromErrno(PyExc_OSError);
        return -1;
    }
    /* Always watched, but unreferenced: it must not keep uv_run alive once the server has closed everything. */
    uv_poll_start(&A.select_timer, UV_READABLE, on_select_timer);
    uv_unref((uv_handle_t *)&A.select_timer);
    uv_async_init(loop, &A.keepalive, NULL);
    A.client_disconnected = PyErr_NewExceptionWithDoc(
        "ponte.ClientDisconnected", "send() after the client went away (an OSError).", PyExc_OSError, NULL);
    A.disconnect_event = Py_BuildValue("{s:s}", "type", "http.disconnect");
    A.scope_template_asgi = Py_BuildValue("{s:s,s:s}", "version", "3.0", "spec_version", "2.4");
    mod = PyModule_Create(&mod_def);
    modules = PyImport_GetModuleDict();     /* borrowed */
    if (A.client_disconnected == NULL || A.disconnect_event == NULL || A.scope_template_asgi == NULL
        || mod == NULL || PyDict_SetItemString(modules, "_ponte", mod) < 0
        || PyModule_AddObjectRef(mod, "ClientDisconnected", A.client_disconnected) < 0) {
        Py_XDECREF(mod);
        return -1;
    }
    Py_DECREF(mod);
    code = Py_CompileString(asgi_selector_py, "ponte/asgi_selector.py", Py_file_input);
    ns = PyDict_New();
    if (code == NULL || ns == NULL || PyDict_SetItemString(ns, "__builtins__", PyEval_GetBuiltins()) < 0
        || PyDict_SetItemString(ns, "__name__", PyUnicode_FromString("ponte.asgi_selector")) < 0) {
        goto error;
    }
    r = PyEval_EvalCode(code, ns, ns);
    Py_CLEAR(code);
    if (r == NULL) {
        goto error;
    }
    Py_DECREF(r);
    code = Py_CompileString(asgi_lifespan_py, "ponte/asgi_lifespan.py", Py_file_input);
    r = code ? PyEval_EvalCode(code, ns, ns) : NULL;
    Py_CLEAR(code);
    if (r == NULL) {
        goto error;
    }
    Py_DECREF(r);
    selector_cls = PyDict_GetItemString(ns, "LibuvSelector");   /* borrowed */
    selector = selector_cls ? PyObject_CallNoArgs(selector_cls) : NULL;
    asyncio = PyImport_ImportModule("asyncio");
    if (selector == NULL || asyncio == NULL) {
        goto error;
    }
    A.loop = PyObject_CallMethod(asyncio, "SelectorEventLoop", "O", selector);
    if (A.loop == NULL) {
        goto error;
    }
    r = PyObject_CallMethod(asyncio, "set_event_loop", "O", A.loop);
    if (r == NULL) {
        goto error;
    }
    Py_DECREF(r);
    A.create_task = PyObject_GetAttrString(A.loop, "create_task");
    A.create_future = PyObject_GetAttrString(A.loop, "create_future");
    A.task_type = PyObject_GetAttrString(asyncio, "Task");
    A.kw_loop = Py_BuildValue("(s)", "loop");
    if (A.create_task == NULL || A.create_future == NULL || A.task_type == NULL || A.kw_loop == NULL) {
        goto error;
    }
    if (cfg->lifespan != PT_LIFESPAN_OFF && run_startup(ns, cfg) < 0) {
        Py_DECREF(selector);
        Py_DECREF(asyncio);
        Py_DECREF(ns);
        return -2;          /* already reported */
    }
    Py_DECREF(selector);
    Py_DECREF(asyncio);
    Py_DECREF(ns);

    base->before_exit = asgi_before_exit;
    base->streams_body = true;
    base->on_loop = true;
    base->on_request = asgi_on_request;
    base->on_body = asgi_on_body;
    base->on_drain = asgi_on_drain;
    base->on_gone = asgi_on_gone;
    base->run = asgi_run;
    return 0;
error:
    Py_XDECREF(code);
    Py_XDECREF(ns);
    Py_XDECREF(selector);
    Py_XDECREF(asyncio);
    return -1;
}
