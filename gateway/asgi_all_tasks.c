/*
 * asyncio's registry of live tasks (what asyncio.all_tasks() reads), with its add() in C.
 *
 * Up to Python 3.13 every Task registers itself from its constructor into a weakref.WeakSet: 3.11's
 * asyncio.tasks._all_tasks, 3.12 and 3.13's _scheduled_tasks (a Task whose eager first step finishes it never gets
 * there; one that goes on waiting does). WeakSet.add() is Python (a frame, then a weakref whose callback is another
 * Python function), and when the task is freed that callback runs as a second frame to discard it. Per ASGI request
 * that is one Task, and the two frames were about 3.5k of an ASGI hello's 32k instructions on 3.11 (callgrind:
 * _asyncio's Task init calling WeakSet.add, and PyObject_ClearWeakRefs calling _remove). From 3.14 asyncio keeps
 * its tasks in C itself (a list per thread) and there is nothing here to replace.
 *
 * Here add() and the removal callback are C, step for step WeakSet.add and WeakSet.__init__'s _remove: the same
 * set (self.data) of weak references, the same _pending_removals while the set is being iterated, the same
 * TypeError for what cannot be weakly referenced. add() is installed as an instance attribute of that one WeakSet,
 * where Task's constructor (C or Python) looks it up; every other method of the set stays asyncio's, and
 * asyncio.all_tasks() sees what it saw before. Installed only on the versions named above, when the set is the
 * stdlib's WeakSet with the attributes used here, and after a check that an object added is found and is gone
 * once freed; otherwise, or with PONTE_ASGI_LOOP=python, the set stays as it is, and the log says why.
 */
#include "asgi.h"

#include <stdlib.h>
#include <string.h>

#include "../server/log.h"

/* The WeakSet each version's Task constructor adds to; "" where asyncio registers tasks in C. */
#if PY_VERSION_HEX < 0x030C0000
#define TASK_SET "_all_tasks"
#elif PY_VERSION_HEX < 0x030E0000
#define TASK_SET "_scheduled_tasks"
#else
#define TASK_SET ""
#endif

static struct {
    PyObject *dict;   /* the set's __dict__ */
    PyObject *remove; /* the removal callback, bound to a weak reference to the set */
    PyObject *s_data, *s_pending, *s_iterating, *s_commit, *s_append, *s_discard, *s_add;
} task_set;

/*
 * self.<name>, from the set's __dict__ (WeakSet keeps all of its state there: no slots, no descriptors of these
 * names), or through getattr if it is not there. New ref, or NULL with an exception set.
 */
static PyObject *
member(PyObject *self, PyObject *name)
{
    PyObject *v = PyDict_GetItemWithError(task_set.dict, name);

    if (v != NULL) {
        return Py_NewRef(v);
    }
    return PyErr_Occurred() ? NULL : PyObject_GetAttr(self, name);
}

/* self.<name> is true: 1, 0, or -1 with an exception set. */
static int
member_true(PyObject *self, PyObject *name)
{
    PyObject *v = member(self, name);
    int r = v != NULL ? PyObject_IsTrue(v) : -1;

    Py_XDECREF(v);
    return r;
}

/* self.<name>.<method>(arg), with set and list methods called directly where the member is exactly one. */
static int
call_on_member(PyObject *self, PyObject *name, PyObject *method, PyObject *arg)
{
    PyObject *target = member(self, name), *r = NULL;
    int rc = -1;

    if (target == NULL) {
        return -1;
    }
    if (PySet_CheckExact(target) && method == task_set.s_add) {
        rc = PySet_Add(target, arg);
    } else if (PySet_CheckExact(target) && method == task_set.s_discard) {
        rc = PySet_Discard(target, arg) < 0 ? -1 : 0;
    } else if (PyList_CheckExact(target) && method == task_set.s_append) {
        rc = PyList_Append(target, arg);
    } else if ((r = PyObject_CallMethodOneArg(target, method, arg)) != NULL) {
        rc = 0;
    }
    Py_XDECREF(r);
    Py_DECREF(target);
    return rc;
}

/* WeakSet's _remove(item): a task's weak reference died. Called by the weakref machinery with the reference. */
static PyObject *
removed(PyObject *selfref, PyObject *item)
{
    PyObject *self;
    int busy, rc = PyWeakref_GetRef(selfref, &self);

    if (rc <= 0) {
        return rc < 0 ? NULL : Py_NewRef(Py_None); /* the set itself is gone */
    }
    busy = member_true(self, task_set.s_iterating);
    rc = busy < 0 ? -1
        : busy    ? call_on_member(self, task_set.s_pending, task_set.s_append, item)
                  : call_on_member(self, task_set.s_data, task_set.s_discard, item);
    Py_DECREF(self);
    if (rc < 0) {
        return NULL;
    }
    Py_RETURN_NONE;
}

/* WeakSet.add(item), for the task set only. */
static PyObject *
add(PyObject *self, PyObject *item)
{
    int pending = member_true(self, task_set.s_pending), rc;
    PyObject *ref, *r;

    if (pending < 0) {
        return NULL;
    }
    if (pending) {
        if ((r = PyObject_CallMethodNoArgs(self, task_set.s_commit)) == NULL) {
            return NULL;
        }
        Py_DECREF(r);
    }
    if ((ref = PyWeakref_NewRef(item, task_set.remove)) == NULL) {
        return NULL;
    }
    rc = call_on_member(self, task_set.s_data, task_set.s_add, ref);
    Py_DECREF(ref);
    if (rc < 0) {
        return NULL;
    }
    Py_RETURN_NONE;
}

static PyMethodDef removed_def = { "_remove", removed, METH_O, "ponte: WeakSet's removal callback, in C" };
static PyMethodDef add_def = { "add", add, METH_O, "ponte: WeakSet.add for asyncio's task set, in C" };

/* ------------------------------------------------------------------------------------------------------------ */
/* The start-up check */

/* Whether `obj` is a function named `qualname` of module _weakrefset. */
static bool
is_weakrefset_function(PyObject *obj, const char *qualname)
{
    PyObject *mod = obj && PyFunction_Check(obj) ? PyObject_GetAttrString(obj, "__module__") : NULL;
    PyObject *qual = mod ? PyObject_GetAttrString(obj, "__qualname__") : NULL;
    bool same = qual != NULL && PyUnicode_Check(mod) && PyUnicode_Check(qual)
        && PyUnicode_CompareWithASCIIString(mod, "_weakrefset") == 0
        && PyUnicode_CompareWithASCIIString(qual, qualname) == 0;

    Py_XDECREF(qual);
    Py_XDECREF(mod);
    PyErr_Clear();
    return same;
}

/* Why the task set is not the WeakSet this file knows, or NULL when it is. */
static const char *
set_differs(PyObject *set, PyObject *weakset_type)
{
    PyObject *dict = PyObject_GenericGetDict(set, NULL), *v, *add_fn = NULL;
    const char *why = NULL;

    if (weakset_type == NULL || Py_TYPE(set) != (PyTypeObject *)weakset_type) {
        why = "it is not a weakref.WeakSet";
    } else if (dict == NULL) {
        why = "it has no __dict__";
    } else if (PyDict_GetItemString(dict, "add") != NULL) {
        why = "it has an add of its own already";
    } else if ((v = PyDict_GetItemString(dict, "data")) == NULL || !PySet_CheckExact(v)
               || (v = PyDict_GetItemString(dict, "_pending_removals")) == NULL || !PyList_CheckExact(v)
               || (v = PyDict_GetItemString(dict, "_iterating")) == NULL || !PySet_CheckExact(v)) {
        why = "its data, _pending_removals or _iterating is not what WeakSet.__init__ makes";
    } else if (PyObject_HasAttrString(weakset_type, "data") || PyObject_HasAttrString(weakset_type, "_pending_removals")
               || PyObject_HasAttrString(weakset_type, "_iterating")) {
        why = "WeakSet has a class attribute of the name of an instance one";
    } else if (!is_weakrefset_function(PyDict_GetItemString(dict, "_remove"), "WeakSet.__init__.<locals>._remove")) {
        why = "its _remove is not WeakSet's";
    } else if (!is_weakrefset_function(add_fn = PyObject_GetAttrString(weakset_type, "add"), "WeakSet.add")) {
        why = "WeakSet.add is not the stdlib's";
    }
    PyErr_Clear();
    Py_XDECREF(add_fn);
    Py_XDECREF(dict);
    return why;
}

/* len(set.data), or -1. */
static Py_ssize_t
data_len(PyObject *set)
{
    PyObject *data = PyObject_GetAttr(set, task_set.s_data);
    Py_ssize_t n = data != NULL ? PyObject_Size(data) : -1;

    Py_XDECREF(data);
    return n;
}

/* With add installed: a Future added through the set's add() is in it, and gone once freed. */
static const char *
add_differs(PyObject *set)
{
    Py_ssize_t before = data_len(set), during = -1;
    PyObject *fut = before >= 0 ? PyObject_CallNoArgs(pt_asgi_here.create_future) : NULL;
    PyObject *r = fut ? PyObject_CallMethodOneArg(set, task_set.s_add, fut) : NULL;
    int found = r ? PySequence_Contains(set, fut) : -1;
    const char *why = NULL;

    during = data_len(set);
    Py_XDECREF(r);
    Py_XDECREF(fut);
    if (found != 1 || during != before + 1) {
        why = "an object added was not found in it";
    } else if (data_len(set) != before) {
        why = "an object added was still in it once freed";
    }
    PyErr_Clear();
    return why;
}

int
pt_asgi_all_tasks_install(void)
{
    const char *env = getenv("PONTE_ASGI_LOOP"), *why;
    PyObject *tasks = NULL, *weakrefset = NULL, *set = NULL, *weakset_type = NULL, *selfref = NULL, *f = NULL;
    int rc = -1;

    if ((env != NULL && strcmp(env, "python") == 0) || pt_asgi_here.index > 1) {
        return 0; /* one set for every loop: installed with the first */
    }
    if (TASK_SET[0] == '\0') {
        pt_log_debug("ASGI: asyncio registers its tasks in C itself (3.14+): no task set to replace");
        return 0;
    }
    task_set.s_data = PyUnicode_InternFromString("data");
    task_set.s_pending = PyUnicode_InternFromString("_pending_removals");
    task_set.s_iterating = PyUnicode_InternFromString("_iterating");
    task_set.s_commit = PyUnicode_InternFromString("_commit_removals");
    task_set.s_append = PyUnicode_InternFromString("append");
    task_set.s_discard = PyUnicode_InternFromString("discard");
    task_set.s_add = PyUnicode_InternFromString("add");
    if (!task_set.s_data || !task_set.s_pending || !task_set.s_iterating || !task_set.s_commit || !task_set.s_append
        || !task_set.s_discard || !task_set.s_add) {
        return -1;
    }
    tasks = PyImport_ImportModule("asyncio.tasks");
    weakrefset = tasks ? PyImport_ImportModule("_weakrefset") : NULL;
    set = weakrefset ? PyObject_GetAttrString(tasks, TASK_SET) : NULL;
    weakset_type = set ? PyObject_GetAttrString(weakrefset, "WeakSet") : NULL;
    PyErr_Clear();
    why = set == NULL ? "asyncio.tasks has no " TASK_SET : set_differs(set, weakset_type);
    if (why == NULL) {
        task_set.dict = PyObject_GenericGetDict(set, NULL);
        selfref = task_set.dict ? PyWeakref_NewRef(set, NULL) : NULL;
        task_set.remove = selfref ? PyCFunction_New(&removed_def, selfref) : NULL;
        f = task_set.remove ? PyCFunction_New(&add_def, set) : NULL;
        if (f == NULL || PyObject_SetAttr(set, task_set.s_add, f) < 0) {
            goto done;
        }
        if ((why = add_differs(set)) != NULL && PyObject_DelAttr(set, task_set.s_add) < 0) {
            goto done;
        }
    }
    if (why != NULL) {
        pt_log_warning("ASGI: asyncio's task set (all_tasks) adds in Python, not in C: %s", why);
    } else {
        pt_log_debug("ASGI: asyncio's task set (all_tasks) adds in C");
    }
    rc = 0;
done:
    Py_XDECREF(f);
    Py_XDECREF(selfref);
    Py_XDECREF(weakset_type);
    Py_XDECREF(set);
    Py_XDECREF(weakrefset);
    Py_XDECREF(tasks);
    return rc;
}
