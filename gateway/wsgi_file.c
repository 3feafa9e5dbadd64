/*
 * wsgi.file_wrapper (PEP 3333 "Optional Platform-Specific File Handling"). Returned by the app, a wrapper around a
 * real file is sent with sendfile(2) by wsgi.c; anything else is iterated in blksize reads like any iterable.
 */
#include "gateway.h"

#include <structmember.h>
#include <sys/stat.h>

static PyObject *
file_wrapper_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = { "filelike", "blksize", NULL };
    PyObject *filelike;
    Py_ssize_t blksize = 8192;
    pt_file_wrapper_t *self;

    if (!PyArg_ParseTupleAndKeywords(args, kwds, "O|n:file_wrapper", kwlist, &filelike, &blksize)) {
        return NULL;
    }
    if (blksize <= 0) {
        PyErr_SetString(PyExc_ValueError, "blksize must be positive");
        return NULL;
    }
    self = (pt_file_wrapper_t *)type->tp_alloc(type, 0);
    if (self == NULL) {
        return NULL;
    }
    self->filelike = Py_NewRef(filelike);
    self->blksize = blksize;
    return (PyObject *)self;
}

static void
file_wrapper_dealloc(pt_file_wrapper_t *self)
{
    PyObject_GC_UnTrack(self);
    Py_CLEAR(self->filelike);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static int
file_wrapper_traverse(pt_file_wrapper_t *self, visitproc visit, void *arg)
{
    Py_VISIT(self->filelike);
    return 0;
}

static int
file_wrapper_clear(pt_file_wrapper_t *self)
{
    Py_CLEAR(self->filelike);
    return 0;
}

static PyObject *
file_wrapper_iternext(pt_file_wrapper_t *self)
{
    PyObject *data;

    if (self->filelike == NULL) {
        return NULL;
    }
    data = PyObject_CallMethod(self->filelike, "read", "n", self->blksize);
    if (data == NULL) {
        return NULL;
    }
    if (PyBytes_Check(data) && PyBytes_GET_SIZE(data) == 0) {
        Py_DECREF(data);
        return NULL;
    }
    return data;
}

static PyObject *
file_wrapper_close(pt_file_wrapper_t *self, PyObject *unused)
{
    PyObject *r;

    if (self->filelike == NULL || !PyObject_HasAttrString(self->filelike, "close")) {
        Py_RETURN_NONE;
    }
    r = PyObject_CallMethod(self->filelike, "close", NULL);
    return r;
}

int
pt_file_wrapper_regular(pt_file_wrapper_t *fw, int *fd, off_t *offset, size_t *count)
{
    PyObject *r = fw->filelike ? PyObject_CallMethodNoArgs(fw->filelike, pt_str.fileno) : NULL;
    struct stat st;

    if (r == NULL) {
        PyErr_Clear(); /* not a real file (BytesIO and friends): iterate it */
        return -1;
    }
    *fd = PyLong_AsLong(r);
    Py_DECREF(r);
    if (*fd < 0 || fstat(*fd, &st) < 0 || !S_ISREG(st.st_mode)) {
        PyErr_Clear();
        return -1;
    }
    r = PyObject_CallMethodNoArgs(fw->filelike, pt_str.tell);
    if (r == NULL) {
        PyErr_Clear();
        return -1;
    }
    *offset = (off_t)PyLong_AsLongLong(r);
    Py_DECREF(r);
    if (*offset < 0 || *offset > st.st_size) {
        PyErr_Clear();
        return -1;
    }
    *count = (size_t)(st.st_size - *offset);
    return 0;
}

static PyMethodDef file_wrapper_methods[] = {
    { "close", (PyCFunction)file_wrapper_close, METH_NOARGS, "Close the wrapped file." },
    { NULL, NULL, 0, NULL },
};

static PyMemberDef file_wrapper_members[] = {
    { "filelike", T_OBJECT, offsetof(pt_file_wrapper_t, filelike), READONLY, NULL },
    { "blksize", T_PYSSIZET, offsetof(pt_file_wrapper_t, blksize), READONLY, NULL },
    { NULL, 0, 0, 0, NULL },
};

/* PyVarObject_HEAD_INIT ends in its own comma, which clang-format does not know. */
/* clang-format off */
PyTypeObject pt_file_wrapper_type = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "ponte.FileWrapper",
    .tp_basicsize = sizeof(pt_file_wrapper_t),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_doc = "wsgi.file_wrapper(filelike, blksize=8192): a file the server may send with sendfile().",
    .tp_new = file_wrapper_new,
    .tp_dealloc = (destructor)file_wrapper_dealloc,
    .tp_traverse = (traverseproc)file_wrapper_traverse,
    .tp_clear = (inquiry)file_wrapper_clear,
    .tp_iter = PyObject_SelfIter,
    .tp_iternext = (iternextfunc)file_wrapper_iternext,
    .tp_methods = file_wrapper_methods,
    .tp_members = file_wrapper_members,
};
/* clang-format on */
