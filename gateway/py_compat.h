/*
 * The public C API of newer CPythons, for the older ones ponte builds for: gateway/ calls the current names
 * everywhere, and this file gives 3.11 what it lacks (the private calls it had instead, or the same few lines).
 * When ponte stops building for a version, its block here goes; nothing else changes.
 */
#ifndef PT_PY_COMPAT_H
#define PT_PY_COMPAT_H

#include <Python.h>

#if PY_VERSION_HEX < 0x030D0000
/* 3.13 made these public (_PyLong_AsInt, _PyObject_LookupAttr), added the strong-reference PyWeakref_GetRef and
 * deprecated PyWeakref_GetObject. */
static inline int
PyLong_AsInt(PyObject *o)
{
    return _PyLong_AsInt(o);
}

static inline int
PyObject_GetOptionalAttr(PyObject *o, PyObject *name, PyObject **result)
{
    return _PyObject_LookupAttr(o, name, result);
}

/* 1 and a new reference in *ref; 0 and NULL once the referent is gone; -1 with an exception if ref is no weak
 * reference. */
static inline int
PyWeakref_GetRef(PyObject *ref, PyObject **pobj)
{
    PyObject *o;

    if (ref == NULL || !PyWeakref_Check(ref)) {
        *pobj = NULL;
        PyErr_SetString(PyExc_TypeError, "expected a weakref");
        return -1;
    }
    o = PyWeakref_GET_OBJECT(ref);
    *pobj = o == Py_None ? NULL : Py_NewRef(o);
    return *pobj != NULL;
}
#endif

#endif
