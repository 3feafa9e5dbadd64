/*
 * One ASGI WebSocket (spec 2.4): the receive and send callables of a "websocket" scope, over server/ws.h.
 *
 * receive() gives websocket.connect first, then the client's messages, then websocket.disconnect (with the close
 * code and reason) once the connection is over, and again if asked again. send() takes websocket.accept,
 * websocket.send and websocket.close, or before accepting, websocket.http.response.start/body to deny the
 * handshake with a response of the app's own (websocket.close before accepting is a 403). Once the connection is
 * closing or closed, send() raises ponte.ClientDisconnected, an OSError.
 */
#include "asgi.h"

#include <errno.h>

#include "../server/log.h"
#include "../server/ws.h"

typedef struct {
    PyObject_HEAD
    pt_request_t *req; /* NULL once the app is finished with it */
    uint64_t t0;
    PyObject *receive, *send, *task, *recv_fut, *send_fut;
    PyObject *headers; /* a denial's http.response.start headers */
    int status;
    bool connected, accepted, closed, gone;
    bool resp_started, resp_head_sent, resp_complete;
    pt_buf_t out;
} pt_asgi_ws_t;

static PyTypeObject ws_type;

static int
ws_traverse(pt_asgi_ws_t *w, visitproc visit, void *arg)
{
    Py_VISIT(w->receive);
    Py_VISIT(w->send);
    Py_VISIT(w->task);
    Py_VISIT(w->recv_fut);
    Py_VISIT(w->send_fut);
    Py_VISIT(w->headers);
    return 0;
}

static int
ws_clear(pt_asgi_ws_t *w)
{
    Py_CLEAR(w->receive);
    Py_CLEAR(w->send);
    Py_CLEAR(w->task);
    Py_CLEAR(w->recv_fut);
    Py_CLEAR(w->send_fut);
    Py_CLEAR(w->headers);
    return 0;
}

static void
ws_dealloc(pt_asgi_ws_t *w)
{
    PyObject_GC_UnTrack(w);
    ws_clear(w);
    pt_buf_free(&w->out);
    PyObject_GC_Del(w);
}

/* ------------------------------------------------------------------------------------------------------------ */
/* receive() */

static PyObject *
event_disconnect(pt_asgi_ws_t *w)
{
    const char *reason = "";
    size_t len = 0;
    unsigned code = w->req != NULL && w->accepted ? pt_ws_close_code(w->req, &reason, &len) : PT_WS_ABNORMAL;

    w->gone = true;
    return Py_BuildValue("{s:s,s:I,s:s#}", "type", "websocket.disconnect", "code", code, "reason", reason,
                         (Py_ssize_t)len);
}

/* The next receive() event, or NULL without an exception when it has to wait. New ref. */
static PyObject *
next_event(pt_asgi_ws_t *w)
{
    pt_ws_msg_t msg;
    PyObject *data, *ev;
    int r;

    if (!w->connected) {
        w->connected = true;
        return Py_BuildValue("{s:s}", "type", "websocket.connect");
    }
    if (w->req == NULL || w->gone || pt_req_gone(w->req)) {
        return event_disconnect(w);
    }
    if (!w->accepted) {
        return w->closed ? event_disconnect(w) : NULL; /* the client waits for our answer to its handshake */
    }
    r = pt_ws_recv(w->req, &msg);
    if (r == 0) {
        return NULL;
    }
    if (r < 0) {
        return event_disconnect(w);
    }
    data = msg.text ? PyUnicode_DecodeUTF8((const char *)msg.data, (Py_ssize_t)msg.len, "strict")
                    : PyBytes_FromStringAndSize((const char *)msg.data, (Py_ssize_t)msg.len);
    ev = data ? Py_BuildValue("{s:s,s:O}", "type", "websocket.receive", msg.text ? "text" : "bytes", data) : NULL;
    Py_XDECREF(data);
    return ev;
}

static PyObject *
ws_receive(pt_asgi_ws_t *w, PyObject *unused)
{
    PyObject *ev = next_event(w);

    if (ev != NULL) {
        return pt_asgi_ready(ev);
    }
    if (PyErr_Occurred()) {
        return NULL;
    }
    if (w->recv_fut != NULL && !pt_asgi_fut_done(w->recv_fut)) {
        PyErr_SetString(PyExc_RuntimeError, "receive() awaited twice at the same time");
        return NULL;
    }
    Py_CLEAR(w->recv_fut);
    w->recv_fut = PyObject_CallNoArgs(pt_asgi_here.create_future);
    return Py_XNewRef(w->recv_fut);
}

/* Something happened (a message, the close, the accept): a waiting receive() may go. */
static void
ws_wake_receive(pt_asgi_ws_t *w)
{
    PyObject *ev;

    if (w->recv_fut == NULL || pt_asgi_fut_done(w->recv_fut)) {
        return;
    }
    ev = next_event(w);
    if (ev != NULL) {
        pt_asgi_fut_resolve(&w->recv_fut, ev, NULL);
    } else if (PyErr_Occurred()) {
        pt_py_log_exception("cannot deliver a WebSocket message", w->req);
    }
}

/* ------------------------------------------------------------------------------------------------------------ */
/* send() */

static PyObject *
send_gone(pt_asgi_ws_t *w)
{
    PyErr_SetString(pt_asgi.client_disconnected, "the WebSocket is closed");
    return NULL;
}

/* send() completes at once, or, with more than PT_OUT_HIGH queued for a slow reader, once the queue drains. */
static PyObject *
send_done(pt_asgi_ws_t *w)
{
    if (pt_req_must_wait(w->req)) {
        Py_XSETREF(w->send_fut, PyObject_CallNoArgs(pt_asgi_here.create_future));
        if (w->send_fut == NULL) {
            return NULL;
        }
        pt_req_suspend(w->req);
        return Py_NewRef(w->send_fut);
    }
    return pt_asgi_ready(Py_NewRef(Py_None));
}

static PyObject *
send_accept(pt_asgi_ws_t *w, PyObject *event)
{
    PyObject *sub = PyDict_GetItemString(event, "subprotocol"); /* borrowed */
    PyObject *hdrs = PyDict_GetItemString(event, "headers"), *list;
    const char *s = NULL;
    Py_ssize_t slen = 0, n;
    pt_header_t *spans = NULL;
    size_t cap = 0;
    int r;

    if (w->accepted || w->closed || w->resp_started) {
        PyErr_SetString(PyExc_RuntimeError, "websocket.accept after the handshake was answered");
        return NULL;
    }
    if (sub != NULL && sub != Py_None && (s = PyUnicode_AsUTF8AndSize(sub, &slen)) == NULL) {
        return NULL;
    }
    list = hdrs != NULL && hdrs != Py_None ? pt_asgi_check_headers(hdrs) : PyList_New(0);
    n = list ? pt_asgi_header_spans(list, &spans, &cap) : -1;
    if (n < 0) {
        Py_XDECREF(list);
        PyMem_Free(spans);
        return NULL;
    }
    r = pt_ws_accept(w->req, s, (size_t)slen, spans, (size_t)n);
    PyMem_Free(spans);
    Py_DECREF(list);
    if (r == -EINVAL) {
        PyErr_Format(PyExc_ValueError, "subprotocol %R was not offered by the client", sub);
        return NULL;
    }
    if (r < 0) {
        return r == -ENOMEM ? PyErr_NoMemory() : send_gone(w);
    }
    w->accepted = true;
    return send_done(w);
}

static PyObject *
send_message(pt_asgi_ws_t *w, PyObject *event)
{
    PyObject *text = PyDict_GetItemString(event, "text"), *bytes = PyDict_GetItemString(event, "bytes");
    Py_buffer view;
    int r;

    text = text == Py_None ? NULL : text;
    bytes = bytes == Py_None ? NULL : bytes;
    if (!w->accepted) {
        PyErr_SetString(PyExc_RuntimeError, "websocket.send before websocket.accept");
        return NULL;
    }
    if ((text == NULL) == (bytes == NULL)) {
        PyErr_SetString(PyExc_ValueError, "websocket.send needs exactly one of 'text' and 'bytes'");
        return NULL;
    }
    if (text != NULL) {
        Py_ssize_t n;
        const char *p = PyUnicode_Check(text) ? PyUnicode_AsUTF8AndSize(text, &n) : NULL;

        if (p == NULL) {
            if (!PyErr_Occurred()) {
                PyErr_SetString(PyExc_TypeError, "websocket.send 'text' must be a str");
            }
            return NULL;
        }
        r = pt_ws_send(w->req, true, p, (size_t)n);
    } else {
        if (PyObject_GetBuffer(bytes, &view, PyBUF_SIMPLE) < 0) {
            return NULL;
        }
        r = pt_ws_send(w->req, false, view.buf, (size_t)view.len);
        PyBuffer_Release(&view);
    }
    if (r < 0) {
        return r == -ENOMEM ? PyErr_NoMemory() : send_gone(w);
    }
    return send_done(w);
}

/* The app refuses the handshake: a 403 of the server's own, or the response it starts (denial_*). */
static PyObject *
deny(pt_asgi_ws_t *w, int status)
{
    pt_request_t *req = w->req;
    pt_resp_ctx_t rctx = { req->http_minor, false, false, false };

    w->out.len = 0;
    memset(&req->resp, 0, sizeof(req->resp));
    if (pt_resp_error(&req->resp, &rctx, &w->out, status) < 0) {
        return PyErr_NoMemory();
    }
    w->closed = w->resp_complete = true;
    if (pt_req_send(req, &w->out, PT_SEND_END) < 0) {
        return send_gone(w);
    }
    ws_wake_receive(w);
    return pt_asgi_ready(Py_NewRef(Py_None));
}

static PyObject *
send_close(pt_asgi_ws_t *w, PyObject *event)
{
    PyObject *code = PyDict_GetItemString(event, "code"), *reason = PyDict_GetItemString(event, "reason");
    const char *r = "";
    Py_ssize_t rlen = 0;
    long c = 1000;

    if (!w->accepted) {
        if (w->closed || w->resp_started) {
            PyErr_SetString(PyExc_RuntimeError, "websocket.close after the handshake was answered");
            return NULL;
        }
        return deny(w, 403);
    }
    if (code != NULL && code != Py_None && ((c = PyLong_AsLong(code)) == -1 && PyErr_Occurred())) {
        return NULL;
    }
    if (c < 0 || c > 65535 || !pt_ws_close_code_sendable((unsigned)c)) {
        PyErr_Format(PyExc_ValueError, "%ld is not a close code an endpoint may send (RFC 6455 7.4)", c);
        return NULL;
    }
    if (reason != NULL && reason != Py_None && (r = PyUnicode_AsUTF8AndSize(reason, &rlen)) == NULL) {
        return NULL;
    }
    if (rlen > 123) {
        PyErr_SetString(PyExc_ValueError, "a close reason is at most 123 bytes of UTF-8");
        return NULL;
    }
    w->closed = true;
    if (pt_ws_close(w->req, (unsigned)c, r, (size_t)rlen) < 0) {
        return send_gone(w);
    }
    return pt_asgi_ready(Py_NewRef(Py_None));
}

/* A denial's body (websocket.http.response.body), framed like an HTTP response's; the head goes with the first. */
static PyObject *
denial_body(pt_asgi_ws_t *w, PyObject *event)
{
    pt_request_t *req = w->req;
    PyObject *body = PyDict_GetItemString(event, "body"), *more = PyDict_GetItemString(event, "more_body");
    int more_body = more != NULL && PyObject_IsTrue(more) == 1;
    Py_buffer view = { 0 };
    int r = 0;

    if (body != NULL && PyObject_GetBuffer(body, &view, PyBUF_SIMPLE) < 0) {
        return NULL;
    }
    if (!w->resp_head_sent) {
        pt_resp_ctx_t rctx = { req->http_minor, false, false, false };
        pt_header_t *spans = NULL;
        size_t cap = 0;

        r = pt_asgi_write_head(req, &rctx, w->status, w->headers, more_body ? -1 : (int64_t)view.len, &w->out, &spans,
                               &cap);
        PyMem_Free(spans);
        w->resp_head_sent = r == 0;
    }
    if (r == 0 && view.len > 0) {
        r = pt_resp_body(&req->resp, &w->out, view.buf, (size_t)view.len);
    }
    PyBuffer_Release(&view);
    if (r == 0 && !more_body) {
        pt_resp_end(&req->resp, &w->out);
        w->resp_complete = w->closed = true;
    }
    if (r < 0) {
        return PyErr_Occurred() ? NULL : PyErr_NoMemory();
    }
    if (pt_req_send(req, &w->out, w->resp_complete ? PT_SEND_END : 0) < 0) {
        return send_gone(w);
    }
    ws_wake_receive(w);
    return send_done(w);
}

/* websocket.http.response.start and .body: the app denies the handshake with a response of its own. */
static PyObject *
send_denial(pt_asgi_ws_t *w, PyObject *event, bool start)
{
    PyObject *status, *hdrs;

    if (w->accepted || w->closed) {
        PyErr_SetString(PyExc_RuntimeError, "websocket.http.response after the handshake was answered");
        return NULL;
    }
    if (!start) {
        if (!w->resp_started) {
            PyErr_SetString(PyExc_RuntimeError, "websocket.http.response.body before websocket.http.response.start");
            return NULL;
        }
        return denial_body(w, event);
    }
    status = PyDict_GetItemString(event, "status");
    hdrs = PyDict_GetItemString(event, "headers");
    if (w->resp_started || status == NULL || !PyLong_Check(status)) {
        PyErr_SetString(PyExc_ValueError, "websocket.http.response.start needs an int 'status', once");
        return NULL;
    }
    w->status = (int)PyLong_AsLong(status);
    if (w->status < 100 || w->status > 999) {
        PyErr_Format(PyExc_ValueError, "invalid status %d", w->status);
        return NULL;
    }
    w->headers = hdrs != NULL && hdrs != Py_None ? pt_asgi_check_headers(hdrs) : PyList_New(0);
    w->resp_started = w->headers != NULL;
    return w->resp_started ? pt_asgi_ready(Py_NewRef(Py_None)) : NULL;
}

static PyObject *
send_event(pt_asgi_ws_t *w, PyObject *event)
{
    PyObject *type = PyDict_GetItemString(event, "type");
    const char *t = type != NULL && PyUnicode_Check(type) ? PyUnicode_AsUTF8(type) : NULL;

    if (t == NULL) {
        PyErr_SetString(PyExc_ValueError, "send() takes a dict event with a str 'type'");
        return NULL;
    }
    if (w->req == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "send() after the WebSocket's app returned");
        return NULL;
    }
    if (w->gone || pt_req_gone(w->req)) {
        return send_gone(w);
    }
    if (strcmp(t, "websocket.send") == 0) {
        return send_message(w, event);
    }
    if (strcmp(t, "websocket.accept") == 0) {
        return send_accept(w, event);
    }
    if (strcmp(t, "websocket.close") == 0) {
        return send_close(w, event);
    }
    if (strcmp(t, "websocket.http.response.start") == 0 || strcmp(t, "websocket.http.response.body") == 0) {
        return send_denial(w, event, t[24] == 's');
    }
    PyErr_Format(PyExc_ValueError, "unexpected ASGI message type %R for a websocket scope", type);
    return NULL;
}

/* The send_* functions look the event's values up as borrowed references, from a copy of the app's dict: the app
 * could change its own in another thread meanwhile (free-threaded CPython). */
static PyObject *
ws_send(pt_asgi_ws_t *w, PyObject *event)
{
    PyObject *mine, *r;

    if (!PyDict_Check(event)) {
        PyErr_SetString(PyExc_ValueError, "send() takes a dict event with a str 'type'");
        return NULL;
    }
    mine = PyDict_Copy(event);
    r = mine != NULL ? send_event(w, mine) : NULL;
    Py_XDECREF(mine);
    return r;
}

/* ------------------------------------------------------------------------------------------------------------ */
/* The app's coroutine ends */

static void
ws_finish(pt_asgi_ws_t *w, bool failed)
{
    pt_request_t *req = w->req;
    unsigned flags = PT_SEND_DONE;
    bool owned;

    if (req == NULL) {
        return;
    }
    if (w->accepted) {
        pt_ws_close(req, failed ? PT_WS_INTERNAL_ERROR : PT_WS_NORMAL, NULL, 0); /* unless it closed already */
    } else if (!w->resp_complete) {
        pt_resp_ctx_t rctx = { req->http_minor, false, false, false };

        w->out.len = 0;
        flags |= w->resp_head_sent ? PT_SEND_ABORT : PT_SEND_END;
        if (!w->resp_head_sent) {
            memset(&req->resp, 0, sizeof(req->resp));
            if (pt_resp_error(&req->resp, &rctx, &w->out, 500) < 0) {
                w->out.len = 0;
            }
        }
    }
    if (pt_gil_tracing()) {
        char label[64];

        snprintf(label, sizeof(label), "WS %.*s", (int)req->target.len, req->target.base);
        pt_gil_trace_request(w->t0, label);
    }
    w->req = NULL;
    owned = req->app_data == w;
    req->app_data = NULL;
    pt_asgi_let_go(req, &w->out, flags);
    pt_asgi_fut_resolve(&w->recv_fut, NULL, NULL);
    pt_asgi_fut_resolve(&w->send_fut, NULL, NULL);
    Py_CLEAR(w->task);
    Py_CLEAR(w->receive);
    Py_CLEAR(w->send);
    if (owned) {
        Py_DECREF(w);
    }
}

static void
ws_ended(PyObject *owner, PyObject *exc)
{
    pt_asgi_ws_t *w = (pt_asgi_ws_t *)owner;
    pt_request_t *req = w->req;

    if (req == NULL) {
        return;
    }
    if (exc != NULL && PyErr_GivenExceptionMatches(exc, PyExc_Exception)) {
        PyErr_SetObject((PyObject *)Py_TYPE(exc), exc);
        pt_py_log_exception(w->accepted ? "error in ASGI WebSocket app (closing with 1011)"
                                        : "error in ASGI WebSocket app before it accepted (500)",
                            req);
    } else if (exc == NULL && !w->accepted && !w->closed) {
        pt_log_error("ASGI app returned without accepting or refusing the WebSocket \"%.*s\" (500)",
                     (int)req->target.len, req->target.base);
    }
    ws_finish(w, exc != NULL);
}

static void
ws_closed(PyObject *owner)
{
    ws_finish((pt_asgi_ws_t *)owner, true);
}

static const pt_asgi_run_hooks_t ws_hooks = { ws_ended, ws_closed, NULL, NULL };

static PyMethodDef receive_def = { "receive", (PyCFunction)ws_receive, METH_NOARGS, "ASGI receive()" };
static PyMethodDef send_def = { "send", (PyCFunction)ws_send, METH_O, "ASGI send(event)" };

/* clang-format off */
static PyTypeObject ws_type = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "ponte.ASGIWebSocket",
    .tp_basicsize = sizeof(pt_asgi_ws_t),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_doc = "One ASGI WebSocket: its receive and send callables.",
    .tp_dealloc = (destructor)ws_dealloc,
    .tp_traverse = (traverseproc)ws_traverse,
    .tp_clear = (inquiry)ws_clear,
};
/* clang-format on */

void
pt_asgi_ws_start(pt_request_t *req)
{
    pt_asgi_ws_t *w = PyObject_GC_New(pt_asgi_ws_t, &ws_type);
    PyObject *scope = NULL, *coro = NULL;

    if (w == NULL) {
        pt_buf_t out = { 0 };

        pt_py_log_exception("cannot start the ASGI app", req);
        pt_asgi_let_go(req, &out, PT_SEND_ABORT);
        return;
    }
    memset((char *)w + sizeof(PyObject), 0, sizeof(*w) - sizeof(PyObject));
    w->t0 = pt_gil_now();
    w->receive = PyCFunction_New(&receive_def, (PyObject *)w);
    w->send = PyCFunction_New(&send_def, (PyObject *)w);
    PyObject_GC_Track(w);
    w->req = req;
    req->app_data = Py_NewRef(w); /* the request's reference, given back in ws_finish (see asgi_http.c) */
    scope = w->receive && w->send ? pt_asgi_scope_ws(req) : NULL;
    coro = scope ? pt_asgi_app_call(scope, w->receive, w->send) : NULL;
    if (coro == NULL || pt_asgi_task(coro, (PyObject *)w, &ws_hooks, &w->task) < 0) {
        pt_py_log_exception("cannot start the ASGI app", req);
        ws_finish(w, true); /* 500 */
    }
    Py_XDECREF(scope);
    Py_DECREF(w);
}

/* ------------------------------------------------------------------------------------------------------------ */
/* The server's events */

void
pt_asgi_ws_event(pt_request_t *req)
{
    pt_asgi_ws_t *w = req->app_data;

    if (w != NULL) {
        ws_wake_receive(w);
    }
}

void
pt_asgi_ws_drain(pt_request_t *req)
{
    pt_asgi_ws_t *w = req->app_data;

    if (w != NULL) {
        pt_asgi_fut_resolve(&w->send_fut, NULL, NULL);
    }
}

void
pt_asgi_ws_gone(pt_request_t *req)
{
    pt_asgi_ws_t *w = req->app_data;
    PyObject *err;

    if (w == NULL) {
        return;
    }
    ws_wake_receive(w); /* websocket.disconnect, with the code the close frame carried */
    w->gone = true;
    err = PyObject_CallFunction(pt_asgi.client_disconnected, "s", "the WebSocket is closed");
    if (err != NULL) {
        pt_asgi_fut_resolve(&w->send_fut, NULL, err);
        Py_DECREF(err);
    } else {
        PyErr_Clear();
    }
}

int
pt_asgi_ws_init(void)
{
    return PyType_Ready(&ws_type);
}
