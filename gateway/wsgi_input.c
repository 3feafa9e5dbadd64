/*
 * wsgi.input: the request body, streamed from the socket. Reads take what the loop has buffered with the GIL held;
 * only when nothing is buffered does a worker drop the GIL and wait. A loop-thread app has its whole body buffered.
 */
#include "gateway.h"

#define READ_ALL_STEP (64 * 1024)

typedef struct {
    PyObject_HEAD
    pt_request_t *req;
} pt_input_t;

/* Reads into dst, waiting with the GIL released when nothing is buffered. -1 with an exception set on failure. */
static Py_ssize_t
input_read_some(pt_input_t *self, char *dst, size_t n, int delim)
{
    ssize_t r;

    if (self->req == NULL) {
        PyErr_SetString(PyExc_ValueError, "wsgi.input used after its request finished");
        return -1;
    }
    r = pt_req_read(self->req, dst, n, delim, false);
    if (r == -EAGAIN) {
        PyThreadState *ts = pt_gil_release();

        r = pt_req_read(self->req, dst, n, delim, true);
        pt_gil_acquire(ts);
    }
    if (r < 0) {
        switch (pt_req_body_error(self->req)) {
        case PT_BODY_ERR_TOO_LARGE: PyErr_SetString(PyExc_OSError, "request body larger than --max-body-size"); break;
        case PT_BODY_ERR_INVALID: PyErr_SetString(PyExc_OSError, "malformed request body (chunked encoding)"); break;
        case PT_BODY_ERR_TIMEOUT:
            PyErr_SetString(PyExc_OSError, "client stopped sending the request body (--client-timeout)");
            break;
        default: PyErr_SetString(PyExc_OSError, "client disconnected before sending the whole request body"); break;
        }
        return -1;
    }
    return r;
}

/* Reads up to `limit` bytes (all when limit < 0), stopping after `delim` when delim >= 0. */
static PyObject *
input_read_until(pt_input_t *self, Py_ssize_t limit, int delim)
{
    Py_ssize_t cap, len = 0;
    PyObject *b;

    if (limit == 0) {
        return PyBytes_FromStringAndSize(NULL, 0);
    }
    cap = limit < 0 || limit > READ_ALL_STEP ? READ_ALL_STEP : limit;
    if (self->req != NULL && self->req->content_length >= 0 && self->req->content_length < cap) {
        /* A short body with a known length needs no bigger buffer (read() returns b"" at its end). */
        cap = self->req->content_length > 0 ? (Py_ssize_t)self->req->content_length : 1;
    }
    b = PyBytes_FromStringAndSize(NULL, cap);
    if (b == NULL) {
        return NULL;
    }
    for (;;) {
        Py_ssize_t want = limit < 0 ? cap - len : (limit - len < cap - len ? limit - len : cap - len);
        Py_ssize_t r;

        if (want == 0) {
            if (limit >= 0 && len == limit) {
                break;
            }
            cap *= 2;
            if (limit >= 0 && cap > limit) {
                cap = limit;
            }
            if (_PyBytes_Resize(&b, cap) < 0) {
                return NULL;
            }
            continue;
        }
        r = input_read_some(self, PyBytes_AS_STRING(b) + len, (size_t)want, delim);
        if (r < 0) {
            Py_DECREF(b);
            return NULL;
        }
        if (r == 0) {
            break;
        }
        len += r;
        if (delim >= 0 && PyBytes_AS_STRING(b)[len - 1] == (char)delim) {
            break;
        }
    }
    if (len != cap && _PyBytes_Resize(&b, len) < 0) {
        return NULL;
    }
    return b;
}

static int
size_arg(PyObject *const *args, Py_ssize_t nargs, Py_ssize_t *size)
{
    *size = -1;
    if (nargs > 1) {
        PyErr_SetString(PyExc_TypeError, "expected at most one argument");
        return -1;
    }
    if (nargs == 1 && args[0] != Py_None) {
        *size = PyNumber_AsSsize_t(args[0], PyExc_OverflowError);
        if (*size == -1 && PyErr_Occurred()) {
            return -1;
        }
    }
    return 0;
}

static PyObject *
input_read(pt_input_t *self, PyObject *const *args, Py_ssize_t nargs)
{
    Py_ssize_t size;

    if (size_arg(args, nargs, &size) < 0) {
        return NULL;
    }
    return input_read_until(self, size < 0 ? -1 : size, -1);
}

static PyObject *
input_readline(pt_input_t *self, PyObject *const *args, Py_ssize_t nargs)
{
    Py_ssize_t size;

    if (size_arg(args, nargs, &size) < 0) {
        return NULL;
    }
    return input_read_until(self, size < 0 ? -1 : size, '\n');
}

static PyObject *
input_readlines(pt_input_t *self, PyObject *const *args, Py_ssize_t nargs)
{
    Py_ssize_t hint, total = 0;
    PyObject *lines = PyList_New(0);

    if (lines == NULL || size_arg(args, nargs, &hint) < 0) {
        Py_XDECREF(lines);
        return NULL;
    }
    for (;;) {
        PyObject *line = input_read_until(self, -1, '\n');

        if (line == NULL) {
            Py_DECREF(lines);
            return NULL;
        }
        if (PyBytes_GET_SIZE(line) == 0) {
            Py_DECREF(line);
            break;
        }
        total += PyBytes_GET_SIZE(line);
        if (PyList_Append(lines, line) < 0) {
            Py_DECREF(line);
            Py_DECREF(lines);
            return NULL;
        }
        Py_DECREF(line);
        if (hint > 0 && total >= hint) {
            break;
        }
    }
    return lines;
}

static PyObject *
input_iternext(pt_input_t *self)
{
    PyObject *line = input_read_until(self, -1, '\n');

    if (line != NULL && PyBytes_GET_SIZE(line) == 0) {
        Py_DECREF(line);
        return NULL; /* StopIteration */
    }
    return line;
}

static PyMethodDef input_methods[] = {
    { "read", (PyCFunction)(void (*)(void))input_read, METH_FASTCALL, "read([size]) -> bytes" },
    { "readline", (PyCFunction)(void (*)(void))input_readline, METH_FASTCALL, "readline([size]) -> bytes" },
    { "readlines", (PyCFunction)(void (*)(void))input_readlines, METH_FASTCALL, "readlines([hint]) -> list" },
    { NULL, NULL, 0, NULL },
};

/* PyVarObject_HEAD_INIT ends in its own comma, which clang-format does not know. */
/* clang-format off */
PyTypeObject pt_input_type = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "ponte.InputStream",
    .tp_basicsize = sizeof(pt_input_t),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "The request body (wsgi.input), streamed from the client.",
    .tp_iter = PyObject_SelfIter,
    .tp_iternext = (iternextfunc)input_iternext,
    .tp_methods = input_methods,
};
/* clang-format on */

PyObject *
pt_input_new(void)
{
    return (PyObject *)PyObject_New(pt_input_t, &pt_input_type);
}

void
pt_input_attach(PyObject *input, pt_request_t *req)
{
    ((pt_input_t *)input)->req = req;
}
