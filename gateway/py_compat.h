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

/* 3.13 added strong-reference lookups, which free-threaded builds need (a borrowed item of a dict or list another
 * thread changes may be freed under its reader); with a GIL they are the borrowed lookup and an incref. */
static inline int
PyDict_GetItemRef(PyObject *d, PyObject *key, PyObject **result)
{
    PyObject *v = PyDict_GetItemWithError(d, key);

    *result = Py_XNewRef(v);
    return v != NULL ? 1 : PyErr_Occurred() ? -1 : 0;
}

static inline PyObject *
PyList_GetItemRef(PyObject *list, Py_ssize_t i)
{
    return Py_XNewRef(PyList_GetItem(list, i));
}

/* 3.13's critical sections: a per-object lock in free-threaded builds, nothing with a GIL. */
#define Py_BEGIN_CRITICAL_SECTION(op) {
#define Py_END_CRITICAL_SECTION() }
#endif

#if PY_VERSION_HEX < 0x030E0000
/* 3.14: whether the caller holds the only reference. With a GIL that is the reference count; free-threaded builds
 * (3.14 and later only, for ponte) answer it for biased reference counting, where Py_REFCNT is not a safe test. */
static inline int
PyUnstable_Object_IsUniquelyReferenced(PyObject *o)
{
    return Py_REFCNT(o) == 1;
}
#endif

/* A module of ponte's, made by PyModule_Create: on a free-threaded CPython it says it needs no GIL, or importing it
 * would turn the GIL back on (docs/architecture.md, "Without the GIL", lists what replaces the GIL's protection). */
static inline PyObject *
pt_module_without_gil(PyObject *m)
{
#ifdef Py_GIL_DISABLED
    if (m != NULL && PyUnstable_Module_SetGIL(m, Py_MOD_GIL_NOT_USED) < 0) {
        Py_CLEAR(m);
    }
#endif
    return m;
}

#endif
