/*
 * A WSGI request's context: the start_response callable the app receives (the context object itself), write(),
 * and the spare contexts each thread keeps, so that a request allocates none of them unless the app kept the last
 * one. What wsgi.c needs of them is in wsgi.h.
 */
#include "wsgi.h"

#include <ctype.h>

#include "../server/log.h"

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

/* Checks start_response's headers, once copied: the app's list may change under the check in another thread. */
static int
check_headers(PyObject *headers)
{
    Py_ssize_t i, n = PyList_GET_SIZE(headers);

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
    PyObject *status, *headers, *exc_info = Py_None, *copy, *r = NULL;

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
    if (exc_info != Py_None && (!PyTuple_Check(exc_info) || PyTuple_GET_SIZE(exc_info) != 3)) {
        PyErr_SetString(PyExc_TypeError, "exc_info must be a (type, value, traceback) tuple");
        return NULL;
    }
    if (!PyList_Check(headers)) {
        PyErr_Format(PyExc_TypeError, "headers must be a list of (name, value) tuples, not %.100s",
                     Py_TYPE(headers)->tp_name);
        return NULL;
    }
    copy = PyList_GetSlice(headers, 0, PY_SSIZE_T_MAX);
    if (copy == NULL || check_status(status) < 0 || check_headers(copy) < 0) {
        Py_XDECREF(copy);
        return NULL;
    }
    /* The app's own threads may call it, and write(), while the worker runs the request (free-threaded CPython). */
    Py_BEGIN_CRITICAL_SECTION(ctx);
    if (ctx->req == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "start_response() called after its request finished");
    } else if (exc_info != Py_None && ctx->head_sent) {
        /* PEP 3333: too late to change the status; re-raise the app's exception. */
        PyObject *t = PyTuple_GET_ITEM(exc_info, 0), *v = PyTuple_GET_ITEM(exc_info, 1),
                 *tb = PyTuple_GET_ITEM(exc_info, 2);

        PyErr_Restore(Py_NewRef(t), Py_NewRef(v), tb == Py_None ? NULL : Py_NewRef(tb));
    } else if (exc_info == Py_None && ctx->started) {
        PyErr_SetString(PyExc_RuntimeError, "start_response() called a second time without exc_info");
    } else {
        Py_XSETREF(ctx->status, Py_NewRef(status));
        Py_XSETREF(ctx->headers, Py_NewRef(copy));
        ctx->started = true;
        r = Py_NewRef(ctx->write);
    }
    Py_END_CRITICAL_SECTION();
    Py_DECREF(copy);
    return r;
}

int
pt_wsgi_write_head(pt_ctx_t *ctx)
{
    pt_request_t *req = ctx->req;
    Py_ssize_t i, n = PyList_GET_SIZE(ctx->headers);
    pt_resp_ctx_t rctx = pt_req_resp_ctx(req);
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

int
pt_wsgi_emit(pt_ctx_t *ctx, const char *p, size_t n)
{
    pt_resp_t *r = &ctx->req->resp;

    if (!ctx->head_sent && pt_wsgi_write_head(ctx) < 0) {
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

int
pt_wsgi_flush(pt_ctx_t *ctx, unsigned flags)
{
    if (ctx->out.len == 0 && flags == 0) {
        return pt_req_gone(ctx->req) ? -1 : 0;
    }
    return pt_req_send(ctx->req, &ctx->out, flags) < 0 ? -1 : 0;
}

int
pt_wsgi_wait_drain(pt_ctx_t *ctx)
{
    PyThreadState *ts = pt_gil_release();
    int r = pt_req_wait_drain(ctx->req);

    pt_gil_acquire(ts);
    return r < 0 ? -1 : 0;
}

/* write(data), for the request of ctx: 0, or -1 with an exception set. */
static int
ctx_write(pt_ctx_t *ctx, PyObject *data)
{
    if (ctx->req == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "write() called after its request finished");
        return -1;
    }
    if (!ctx->started) {
        PyErr_SetString(PyExc_RuntimeError, "write() called before start_response()");
        return -1;
    }
    if (pt_wsgi_emit(ctx, PyBytes_AS_STRING(data), (size_t)PyBytes_GET_SIZE(data)) < 0) {
        return -1;
    }
    /* write() is unbuffered in PEP 3333: the bytes leave now; a worker waits for a slow client. */
    if (pt_wsgi_flush(ctx, 0) < 0
        || (!pt_on_loop_thread() && pt_req_must_wait(ctx->req) && pt_wsgi_wait_drain(ctx) < 0)) {
        PyErr_SetString(PyExc_OSError, "client disconnected");
        return -1;
    }
    return 0;
}

/*
 * write() points at its context without a reference while the context holds it: a context and its write() holding
 * each other would never be alone, and ctx_put could never tell whether the app kept either. If the app keeps
 * write() beyond the request, ctx_put gives it a reference to the context (`owns`), so the pointer stays good for
 * as long as write() lives; a context that dies first clears the pointer (ctx_clear).
 */
typedef struct {
    PyObject_HEAD
    vectorcallfunc vectorcall;
    pt_ctx_t *ctx;
    bool owns;
} pt_write_t;

static PyObject *
write_call(PyObject *self, PyObject *const *args, size_t nargsf, PyObject *kwnames)
{
    pt_ctx_t *ctx = ((pt_write_t *)self)->ctx;
    int r;

    if (PyVectorcall_NARGS(nargsf) != 1 || (kwnames != NULL && PyTuple_GET_SIZE(kwnames) > 0)) {
        PyErr_SetString(PyExc_TypeError, "write(data) takes one argument");
        return NULL;
    }
    if (!PyBytes_Check(args[0])) {
        PyErr_Format(PyExc_TypeError, "write() takes bytes, not %.100s", Py_TYPE(args[0])->tp_name);
        return NULL;
    }
    if (ctx == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "write() called after its request finished");
        return NULL;
    }
    Py_BEGIN_CRITICAL_SECTION(ctx);
    r = ctx_write(ctx, args[0]);
    Py_END_CRITICAL_SECTION();
    if (r < 0) {
        return NULL;
    }
    Py_RETURN_NONE;
}

/* ------------------------------------------------------------------------------------------------------------ */
/* write()'s type */

static int
write_traverse(pt_write_t *wr, visitproc visit, void *arg)
{
    if (wr->owns) {
        Py_VISIT(wr->ctx);
    }
    return 0;
}

static int
write_clear(pt_write_t *wr)
{
    if (wr->owns) {
        wr->owns = false;
        Py_CLEAR(wr->ctx);
    }
    return 0;
}

static void
write_dealloc(pt_write_t *wr)
{
    PyObject_GC_UnTrack(wr);
    write_clear(wr);
    PyObject_GC_Del(wr);
}

/* clang-format off */
static PyTypeObject write_type = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "ponte.Write",
    .tp_basicsize = sizeof(pt_write_t),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_HAVE_VECTORCALL,
    .tp_doc = "write(data): send body bytes of one WSGI request now (PEP 3333).",
    .tp_vectorcall_offset = offsetof(pt_write_t, vectorcall),
    .tp_call = PyVectorcall_Call,
    .tp_dealloc = (destructor)write_dealloc,
    .tp_traverse = (traverseproc)write_traverse,
    .tp_clear = (inquiry)write_clear,
};
/* clang-format on */

/* ------------------------------------------------------------------------------------------------------------ */
/* Contexts */

/*
 * Each thread that runs requests (a worker, or the loop thread with --threads 0) keeps its own spare contexts, so
 * that threads running Python at once share none, and a context is only ever used by the thread that made it:
 * free-threaded CPython can then tell, by PyUnstable_Object_IsUniquelyReferenced, that nothing else refers to it.
 */
static _Thread_local pt_ctx_t *spare_ctx;

static PyTypeObject ctx_type;

pt_ctx_t *
pt_wsgi_ctx_get(pt_wsgi_t *w)
{
    pt_ctx_t *ctx = spare_ctx;
    pt_write_t *wr;

    if (ctx != NULL) {
        spare_ctx = ctx->next_free;
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
    wr = PyObject_GC_New(pt_write_t, &write_type);
    if (wr != NULL) {
        wr->vectorcall = write_call;
        wr->ctx = ctx;
        wr->owns = false;
        PyObject_GC_Track(wr);
    }
    ctx->write = (PyObject *)wr;
    PyObject_GC_Track(ctx);
    if (ctx->input == NULL || ctx->write == NULL) {
        Py_DECREF(ctx);
        return NULL;
    }
    return ctx;
}

void
pt_wsgi_ctx_put(pt_ctx_t *ctx)
{
    pt_write_t *wr = (pt_write_t *)ctx->write;
    bool write_kept;

    /* ctx->req is NULL already: wsgi.c's finish() let the request go in the same step as it sent the end. */
    pt_input_attach(ctx->input, NULL);
    Py_CLEAR(ctx->status);
    Py_CLEAR(ctx->headers);
    Py_CLEAR(ctx->result);
    Py_CLEAR(ctx->iter);
    Py_CLEAR(ctx->seq);
    Py_CLEAR(ctx->held);
    /* The output buffer is not kept for the next request. Kept (up to 256 KiB), it made a WSGI server under
     * test_slow_clients' slow-read attack (2 MB responses) serve its other client 3 to 4 times slower, with
     * MALLOC_PERTURB_ set (as meson test sets it) and only then, and not with glibc's mmap threshold fixed
     * (MALLOC_MMAP_THRESHOLD_): the 2 MB buffers then come from the heap, which the perturbation fills on every
     * malloc and free. Freed here, as it was before contexts were reused, the rate holds. */
    pt_buf_free(&ctx->out);
    /* The app kept start_response, write or wsgi.input beyond the request: do not hand them to another one. */
    write_kept = !PyUnstable_Object_IsUniquelyReferenced(ctx->write);
    if (write_kept || !PyUnstable_Object_IsUniquelyReferenced((PyObject *)ctx)
        || !PyUnstable_Object_IsUniquelyReferenced(ctx->input)) {
        if (write_kept) {
            wr->owns = true; /* write() lives on: it keeps the context it points at */
            Py_INCREF(ctx);
        }
        Py_DECREF(ctx);
        return;
    }
    ctx->next_free = spare_ctx;
    spare_ctx = ctx;
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
    pt_write_t *wr = (pt_write_t *)ctx->write;

    if (wr != NULL && !wr->owns) {
        wr->ctx = NULL; /* it may outlive this context (the collector breaking a cycle through the app) */
    }
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

int
pt_wsgi_ctx_types_ready(void)
{
    return PyType_Ready(&ctx_type) < 0 || PyType_Ready(&write_type) < 0 ? -1 : 0;
}
