/*
 * The awaitables of ASGI: an already-completed one, for a receive() or send() that can complete at once (no Future,
 * no extra loop iteration); and the wrapper that runs an app's coroutine inside a real asyncio.Task (asgi_task.c).
 */
#include "asgi.h"

#include "../server/log.h"

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

/* PyVarObject_HEAD_INIT ends in its own comma, which clang-format does not know. */
/* clang-format off */
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
/* clang-format on */

/* Steals `value`. */
PyObject *
pt_asgi_ready(PyObject *value)
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
/* Futures */

void
pt_asgi_fut_resolve(PyObject **slot, PyObject *value, PyObject *exc)
{
    PyObject *fut = *slot, *r = NULL;

    *slot = NULL;
    if (fut == NULL) {
        Py_XDECREF(value);
        return;
    }
    if (!pt_asgi_fut_done(fut)) {
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

bool
pt_asgi_fut_done(PyObject *fut)
{
    PyObject *r = PyObject_CallMethod(fut, "done", NULL);
    bool done = r == NULL || PyObject_IsTrue(r);

    Py_XDECREF(r);
    PyErr_Clear();
    return done;
}

/* ------------------------------------------------------------------------------------------------------------ */
/*
 * The app's coroutine as its Task runs it. This wrapper passes every step through, and tells its owner the moment
 * the coroutine ends, inside the step that ended it: asyncio's done callback would cost a Handle and one more loop
 * turn per request. An exception from the app is handed to the owner (which logs it and answers 500), and the Task
 * ends normally (nobody awaits it, so asyncio would only complain that its exception was never retrieved). A
 * CancelledError, KeyboardInterrupt or SystemExit is passed on to the Task as it came.
 */

typedef struct {
    PyObject_HEAD
    PyObject *coro;  /* the app's coroutine */
    PyObject *owner; /* told when it ends (the request's context) */
    const pt_asgi_run_hooks_t *hooks;
    int route; /* what the sampler counts the steps under (-1: none) */
} pt_run_t;

static int
run_traverse(pt_run_t *r, visitproc visit, void *arg)
{
    Py_VISIT(r->coro);
    Py_VISIT(r->owner);
    return 0;
}

static int
run_clear(pt_run_t *r)
{
    Py_CLEAR(r->coro);
    Py_CLEAR(r->owner);
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
        Py_DECREF(*result); /* an ASGI app's return value means nothing */
        *result = Py_NewRef(Py_None);
        r->hooks->ended(r->owner, NULL);
        return PYGEN_RETURN;
    }
    *result = NULL;
    PyErr_Fetch(&type, &exc, &tb);
    PyErr_NormalizeException(&type, &exc, &tb);
    if (exc == NULL) {
        Py_XDECREF(type);
        Py_XDECREF(tb);
        r->hooks->ended(r->owner, NULL);
        return PYGEN_ERROR; /* unreachable in practice: an error without an exception */
    }
    if (tb != NULL) {
        PyException_SetTraceback(exc, tb);
    }
    if (PyErr_GivenExceptionMatches(exc, PyExc_Exception)) {
        r->hooks->ended(r->owner, exc);
        Py_XDECREF(type);
        Py_DECREF(exc);
        Py_XDECREF(tb);
        *result = Py_NewRef(Py_None);
        return PYGEN_RETURN;
    }
    r->hooks->ended(r->owner, exc);
    PyErr_Restore(type, exc, tb);
    return PYGEN_ERROR;
}

/* Whether each step's GIL goes to the owner (--gil-routes, and an owner that takes it). */
static bool
steps_timed(const pt_run_t *r)
{
    return r->hooks->step_gil != NULL && pt_gil_routes_on();
}

/* The GIL a step held and waited for, to its owner: from the loop thread's totals before it. */
static void
step_gil(pt_run_t *r, uint64_t hold0, uint64_t wait0)
{
    uint64_t hold, wait;

    pt_gil_my_use(&hold, &wait);
    r->hooks->step_gil(r->owner, hold - hold0, wait - wait0);
}

/* The sampler counts what a step runs under its route: set for the step, the one before restored after. */
static int
route_begin(const pt_run_t *r)
{
    return r->route >= 0 ? pt_gil_set_route(r->route) : -1;
}

static void
route_end(const pt_run_t *r, int before)
{
    if (r->route >= 0) {
        pt_gil_set_route(before);
    }
}

static PySendResult
run_am_send(pt_run_t *r, PyObject *arg, PyObject **result)
{
    uint64_t hold0, wait0;
    PySendResult status;
    bool timed = steps_timed(r);
    int before;

    if (!timed && r->route < 0) {
        return run_after(r, PyIter_Send(r->coro, arg, result), result);
    }
    before = route_begin(r);
    pt_gil_my_use(&hold0, &wait0);
    status = PyIter_Send(r->coro, arg, result);
    if (timed) {
        step_gil(r, hold0, wait0);
    }
    route_end(r, before);
    return run_after(r, status, result);
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
    PyObject *meth = PyObject_GetAttrString(r->coro, "throw"), *result;
    PySendResult status = PYGEN_NEXT;
    uint64_t hold0 = 0, wait0 = 0;
    bool timed = steps_timed(r);
    int before = route_begin(r);

    if (timed) {
        pt_gil_my_use(&hold0, &wait0);
    }
    result = meth ? PyObject_Call(meth, args, NULL) : NULL;
    if (timed) {
        step_gil(r, hold0, wait0);
    }
    route_end(r, before);
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

    r->hooks->closed(r->owner);
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
    { NULL, NULL, 0, NULL },
};

static PyGetSetDef run_getset[] = {
    { "__name__", (getter)run_getattr_coro, NULL, NULL, "__name__" },
    { "__qualname__", (getter)run_getattr_coro, NULL, NULL, "__qualname__" },
    { "cr_code", (getter)run_getattr_coro, NULL, NULL, "cr_code" },
    { "cr_frame", (getter)run_getattr_coro, NULL, NULL, "cr_frame" },
    { "cr_await", (getter)run_getattr_coro, NULL, NULL, "cr_await" },
    { "cr_running", (getter)run_getattr_coro, NULL, NULL, "cr_running" },
    { NULL, NULL, NULL, NULL, NULL },
};

static PyAsyncMethods run_async = { .am_await = run_await, .am_send = (sendfunc)run_am_send };

/* PyVarObject_HEAD_INIT ends in its own comma, which clang-format does not know. */
/* clang-format off */
static PyTypeObject run_type = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "ponte.ASGIAppRun",
    .tp_basicsize = sizeof(pt_run_t),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_doc = "The ASGI app's coroutine, telling its request the moment it ends.",
    .tp_dealloc = (destructor)run_dealloc,
    .tp_traverse = (traverseproc)run_traverse,
    .tp_clear = (inquiry)run_clear,
    .tp_as_async = &run_async,
    .tp_iter = PyObject_SelfIter,
    .tp_iternext = (iternextfunc)run_next,
    .tp_methods = run_methods,
    .tp_getset = run_getset,
};
/* clang-format on */

/* The app's coroutine `coro` (stolen) wrapped for `owner`. New ref, or NULL with an exception set. */
PyObject *
pt_asgi_run_new(PyObject *coro, PyObject *owner, const pt_asgi_run_hooks_t *hooks)
{
    pt_run_t *run = PyObject_GC_New(pt_run_t, &run_type);

    if (run == NULL) {
        Py_DECREF(coro);
        return NULL;
    }
    run->coro = coro;
    run->owner = Py_NewRef(owner);
    run->hooks = hooks;
    run->route = hooks->route != NULL && pt_gil_sampler_on() ? hooks->route(owner) : -1;
    PyObject_GC_Track(run);
    return (PyObject *)run;
}

int
pt_asgi_run_init(void)
{
    return PyType_Ready(&ready_type) < 0 || PyType_Ready(&run_type) < 0 ? -1 : 0;
}
