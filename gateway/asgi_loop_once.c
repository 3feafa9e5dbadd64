/*
 * asyncio's event loop where it is hot, in C: a turn of the loop (BaseEventLoop._run_once) and the scheduling of a
 * callback (call_soon, _call_soon, call_soon_threadsafe), and get_debug, which every Future and Task asks.
 *
 * A turn drops cancelled timers, polls (the selector is LibuvSelector: one libuv iteration), moves the timers that
 * fell due to the ready queue, then runs the callbacks that were ready. Step for step what asyncio's
 * base_events.py does, on the same attributes and with real asyncio.Handle objects, so every method left in Python
 * (call_later, run_in_executor, add_reader, the Task and Future code) sees the state it expects.
 *
 * Written for asyncio 3.11, checked against 3.13 to 3.15 (3.13's new timeout arithmetic gives the same values); the
 * two later changes are gated by version: 3.14's call_soon_threadsafe queues an events._ThreadSafeHandle (run by
 * its own _run(), under its lock) and 3.15 moves timers due by now + max(resolution, ulp(now)). Another version
 * runs asyncio's own methods, and the log says so.
 *
 * Why: Django over ASGI crosses between the loop and asgiref's executor thread about 11 times per request, and
 * every crossing is a few callbacks (the future's _set_state, the Task's wake-up), each scheduled through
 * call_soon and run by _run_once and Handle._run: Python bytecode that uvloop runs as C, and the bulk of what
 * callgrind counted between ponte and uvicorn on uvloop (docs/benchmarks.md). A Handle and a TimerHandle run here
 * as Handle._run runs them, context.run(callback, *args) without its Python frame; a handle of another type runs
 * through its own _run().
 *
 * In debug mode (slow-callback warnings, source tracebacks, thread checks) each of these hands the call to
 * asyncio's own method. They are installed as instance attributes of the loop, where run_forever, asyncio's Futures
 * and Tasks look them up, and only where the loop's class has none of them overridden and has every attribute used
 * here; PONTE_ASGI_LOOP=python keeps asyncio's.
 */
#include "asgi.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "../server/log.h"

#define THREADSAFE_HANDLE (PY_VERSION_HEX >= 0x030E0000) /* 3.14: call_soon_threadsafe's _ThreadSafeHandle */
#define DUE_BY_ULP (PY_VERSION_HEX >= 0x030F0000)        /* 3.15: end_time = now + max(resolution, ulp(now)) */

/* What the C turn uses of asyncio, looked up once (look_up, intern_names). */
static struct {
    PyObject *python_run_once;          /* BaseEventLoop._run_once: a turn in debug mode */
    PyObject *handle_type, *timer_type; /* asyncio.Handle and asyncio.TimerHandle, run here */
    PyObject *threadsafe_type, *rlock;  /* 3.14: events._ThreadSafeHandle and threading.RLock */
    PyObject *heappop, *heapify;
    PyObject *callback_failed; /* asgi_selector.py: what Handle._run does when a callback raises */
    Py_ssize_t min_scheduled;  /* base_events._MIN_SCHEDULED_TIMER_HANDLES */
    double min_cancelled;      /* base_events._MIN_CANCELLED_TIMER_HANDLES_FRACTION */
    double max_timeout;        /* base_events.MAXIMUM_SELECT_TIMEOUT */
    PyObject *s_scheduled, *s_timer_cancelled_count, *s_ready, *s_stopping, *s_selector, *s_clock_resolution, *s_debug,
        *s_cancelled, *s_when, *s_timer_scheduled, *s_context, *s_callback, *s_args, *s_run, *s_select,
        *s_process_events, *s_time, *s_popleft, *s_append, *s_closed, *s_loop, *s_repr, *s_source_traceback,
        *s_call_soon, *s_call_soon_threadsafe, *s_call_soon_internal, *s_write_to_self, *s_lock;
    PyObject *empty;             /* () */
    PyObject *selector_type;     /* LibuvSelector: its select() is pt_asgi_loop_select */
    bool process_events_is_base; /* the loop's _process_events is asyncio's, which does nothing with no events */
    PyObject *s_keys;
} aio;

/* obj.name as a C truth value: 1, 0, or -1 with an exception set. */
static int
attr_true(PyObject *obj, PyObject *name)
{
    PyObject *v = PyObject_GetAttr(obj, name);
    int r = v != NULL ? PyObject_IsTrue(v) : -1;

    Py_XDECREF(v);
    return r;
}

/* loop.time(), as a double: -1 with an exception set on error (the clock never reads negative). */
static double
loop_time(PyObject *loop)
{
    PyObject *t = PyObject_CallMethodNoArgs(loop, aio.s_time);
    double v = t != NULL ? PyFloat_AsDouble(t) : -1;

    Py_XDECREF(t);
    return v;
}

/* loop._scheduled, asyncio's heap of TimerHandles: a list. New ref, or NULL with an exception set. */
static PyObject *
timers_of(PyObject *loop)
{
    PyObject *sched = PyObject_GetAttr(loop, aio.s_scheduled);

    if (sched != NULL && !PyList_Check(sched)) {
        PyErr_SetString(PyExc_TypeError, "loop._scheduled is not a list");
        Py_CLEAR(sched);
    }
    return sched;
}

/* A TimerHandle's deadline (its _when), in loop.time() seconds: -1 with an exception set on error. */
static double
timer_when(PyObject *h)
{
    PyObject *w = PyObject_GetAttr(h, aio.s_when);
    double when = w != NULL ? PyFloat_AsDouble(w) : -1;

    Py_XDECREF(w);
    return when;
}

/* Pops the heap's head and marks it unscheduled: `heapq.heappop(sched)._scheduled = False`. New ref, or NULL. */
static PyObject *
pop_timer(PyObject *sched)
{
    PyObject *h = PyObject_CallOneArg(aio.heappop, sched);

    if (h != NULL && PyObject_SetAttr(h, aio.s_timer_scheduled, Py_False) < 0) {
        Py_CLEAR(h);
    }
    return h;
}

/* The first part of a turn: cancelled timers leave loop._scheduled, all of them when they are many, else those at
 * its head. 0, or -1 with an exception set. */
static int
drop_cancelled_timers(PyObject *loop)
{
    PyObject *sched = timers_of(loop), *count_obj = NULL, *fresh = NULL, *h = NULL;
    Py_ssize_t n, i;
    long count;
    int r = -1, c;

    if (sched == NULL || (count_obj = PyObject_GetAttr(loop, aio.s_timer_cancelled_count)) == NULL) {
        goto done;
    }
    count = PyLong_AsLong(count_obj);
    if (count == -1 && PyErr_Occurred()) {
        goto done;
    }
    n = PyList_GET_SIZE(sched);
    if (n > aio.min_scheduled && (double)count / (double)n > aio.min_cancelled) {
        if ((fresh = PyList_New(0)) == NULL) {
            goto done;
        }
        for (i = 0; i < PyList_GET_SIZE(sched); i++) {
            h = Py_NewRef(PyList_GET_ITEM(sched, i)); /* held: attribute access may run code */
            if ((c = attr_true(h, aio.s_cancelled)) < 0) {
                goto done;
            }
            if (c ? PyObject_SetAttr(h, aio.s_timer_scheduled, Py_False) < 0 : PyList_Append(fresh, h) < 0) {
                goto done;
            }
            Py_CLEAR(h);
        }
        PyObject *ok = PyObject_CallOneArg(aio.heapify, fresh);

        if (ok == NULL) {
            goto done;
        }
        Py_DECREF(ok);
        if (PyObject_SetAttr(loop, aio.s_scheduled, fresh) < 0) {
            goto done;
        }
        count = 0;
    } else {
        while (PyList_GET_SIZE(sched) > 0) {
            h = Py_NewRef(PyList_GET_ITEM(sched, 0));
            if ((c = attr_true(h, aio.s_cancelled)) <= 0) {
                if (c < 0) {
                    goto done;
                }
                break;
            }
            Py_CLEAR(h);
            count--;
            if ((h = pop_timer(sched)) == NULL) {
                goto done;
            }
            Py_CLEAR(h);
        }
    }
    if (count != PyLong_AsLong(count_obj)) {
        PyObject *v = PyLong_FromLong(count);

        if (v == NULL || PyObject_SetAttr(loop, aio.s_timer_cancelled_count, v) < 0) {
            Py_XDECREF(v);
            goto done;
        }
        Py_DECREF(v);
    }
    r = 0;
done:
    Py_XDECREF(h);
    Py_XDECREF(fresh);
    Py_XDECREF(count_obj);
    Py_XDECREF(sched);
    return r;
}

/* How long the poll may block: 0 with callbacks ready or a stop asked, until the next timer, or None (forever).
 * New ref, or NULL with an exception set. */
static PyObject *
select_timeout(PyObject *loop, PyObject *ready)
{
    PyObject *sched = NULL, *head = NULL;
    PyObject *r = NULL;
    Py_ssize_t n = PyObject_Length(ready);
    int stopping = n == 0 ? attr_true(loop, aio.s_stopping) : 0;
    double when, now, t;

    if (n < 0 || stopping < 0) {
        return NULL;
    }
    if (n > 0 || stopping) {
        return PyLong_FromLong(0);
    }
    if ((sched = timers_of(loop)) == NULL) {
        goto done;
    }
    if (PyList_GET_SIZE(sched) == 0) {
        r = Py_NewRef(Py_None);
        goto done;
    }
    head = Py_NewRef(PyList_GET_ITEM(sched, 0));
    when = timer_when(head);
    if ((when == -1 && PyErr_Occurred()) || ((now = loop_time(loop)) < 0 && PyErr_Occurred())) {
        goto done;
    }
    t = when - now;
    r = PyFloat_FromDouble(t < 0 ? 0 : t > aio.max_timeout ? aio.max_timeout : t);
done:
    Py_XDECREF(head);
    Py_XDECREF(sched);
    return r;
}

/* Timers due by now (within the clock's resolution) move to the ready queue. 0, or -1 with an exception set. */
static int
queue_due_timers(PyObject *loop, PyObject *ready)
{
    PyObject *sched = timers_of(loop), *res = NULL, *h = NULL;
    double end, when;
    int r = -1;

    if (sched == NULL || (res = PyObject_GetAttr(loop, aio.s_clock_resolution)) == NULL) {
        goto done;
    }
    end = loop_time(loop);
    if (end < 0 && PyErr_Occurred()) {
        goto done;
    }
    end += DUE_BY_ULP ? fmax(PyFloat_AsDouble(res), nextafter(end, INFINITY) - end) : PyFloat_AsDouble(res);
    if (PyErr_Occurred()) {
        goto done;
    }
    while (PyList_GET_SIZE(sched) > 0) {
        h = Py_NewRef(PyList_GET_ITEM(sched, 0));
        when = timer_when(h);
        if (when == -1 && PyErr_Occurred()) {
            goto done;
        }
        if (when >= end) {
            break;
        }
        Py_CLEAR(h);
        if ((h = pop_timer(sched)) == NULL) {
            goto done;
        }
        PyObject *ok = PyObject_CallMethodOneArg(ready, aio.s_append, h);

        if (ok == NULL) {
            goto done;
        }
        Py_DECREF(ok);
        Py_CLEAR(h);
    }
    r = 0;
done:
    Py_XDECREF(h);
    Py_XDECREF(res);
    Py_XDECREF(sched);
    return r;
}

/*
 * Runs one ready handle as Handle._run does: the callback in the handle's context, an exception other than
 * SystemExit and KeyboardInterrupt handed to the loop's exception handler. 0, or -1 with an exception set (those
 * two, or the handler's own failure), which ends the turn as it does in asyncio.
 */
static int
run_handle(PyObject *h)
{
    PyObject *ctx = NULL, *cb = NULL, *args = NULL, *res = NULL;
    PyObject *type, *value, *tb;
    int r = -1;

    if (!Py_IS_TYPE(h, (PyTypeObject *)aio.handle_type) && !Py_IS_TYPE(h, (PyTypeObject *)aio.timer_type)) {
        res = PyObject_CallMethodNoArgs(h, aio.s_run); /* its own _run: it reports what it catches itself */
        goto done;
    }
    if ((ctx = PyObject_GetAttr(h, aio.s_context)) == NULL || (cb = PyObject_GetAttr(h, aio.s_callback)) == NULL
        || (args = PyObject_GetAttr(h, aio.s_args)) == NULL) {
        goto done;
    }
    if (!PyContext_CheckExact(ctx) || !PyTuple_Check(args)) {
        res = PyObject_CallMethodNoArgs(h, aio.s_run); /* a context or arguments of another kind: asyncio's way */
        goto done;
    }
    if (PyContext_Enter(ctx) == 0) {
        res = PyObject_Call(cb, args, NULL);
        if (PyContext_Exit(ctx) < 0) {
            Py_CLEAR(res);
        }
    }
    if (res == NULL && !PyErr_ExceptionMatches(PyExc_SystemExit) && !PyErr_ExceptionMatches(PyExc_KeyboardInterrupt)) {
        PyErr_Fetch(&type, &value, &tb);
        PyErr_NormalizeException(&type, &value, &tb);
        if (tb != NULL) {
            PyException_SetTraceback(value, tb);
        }
        res = PyObject_CallFunctionObjArgs(aio.callback_failed, h, value, NULL);
        Py_XDECREF(type);
        Py_XDECREF(value);
        Py_XDECREF(tb);
    }
done:
    if (res != NULL) {
        r = 0;
    }
    Py_XDECREF(res);
    Py_XDECREF(args);
    Py_XDECREF(cb);
    Py_XDECREF(ctx);
    return r;
}

/* Runs the callbacks ready at this point, not those they queue (they wait for the next turn, after a poll). */
static int
run_ready(PyObject *ready)
{
    PyObject *popleft = PyObject_GetAttr(ready, aio.s_popleft), *h;
    Py_ssize_t ntodo = PyObject_Length(ready), i;
    int c, r = -1;

    if (popleft == NULL || ntodo < 0) {
        goto done;
    }
    for (i = 0; i < ntodo; i++) {
        if ((h = PyObject_CallNoArgs(popleft)) == NULL) {
            goto done;
        }
        c = attr_true(h, aio.s_cancelled);
        if (c < 0 || (c == 0 && run_handle(h) < 0)) {
            Py_DECREF(h);
            goto done;
        }
        Py_DECREF(h);
    }
    r = 0;
done:
    Py_XDECREF(popleft);
    return r;
}

/* selector.select(timeout); for ponte's own LibuvSelector, the same without its Python. New ref, or NULL. */
static PyObject *
select_events(PyObject *selector, PyObject *timeout)
{
    PyObject *keys, *events;

    if (!Py_IS_TYPE(selector, (PyTypeObject *)aio.selector_type)) {
        return PyObject_CallMethodOneArg(selector, aio.s_select, timeout);
    }
    if ((keys = PyObject_GetAttr(selector, aio.s_keys)) == NULL) {
        return NULL;
    }
    if (!PyDict_Check(keys)) {
        Py_DECREF(keys);
        return PyObject_CallMethodOneArg(selector, aio.s_select, timeout);
    }
    events = pt_asgi_loop_select(keys, timeout);
    Py_DECREF(keys);
    return events;
}

static PyObject *
run_once(PyObject *loop, PyObject *unused)
{
    PyObject *ready = NULL, *timeout = NULL, *selector = NULL, *events = NULL, *r = NULL;
    int debug = attr_true(loop, aio.s_debug);

    if (debug != 0) {
        return debug < 0 ? NULL : PyObject_CallOneArg(aio.python_run_once, loop);
    }
    if (drop_cancelled_timers(loop) < 0 || (ready = PyObject_GetAttr(loop, aio.s_ready)) == NULL
        || (timeout = select_timeout(loop, ready)) == NULL
        || (selector = PyObject_GetAttr(loop, aio.s_selector)) == NULL
        || (events = select_events(selector, timeout)) == NULL) {
        goto done;
    }
    if (PyList_CheckExact(events) && PyList_GET_SIZE(events) == 0 && aio.process_events_is_base) {
        r = Py_NewRef(Py_None);
    } else {
        r = PyObject_CallMethodOneArg(loop, aio.s_process_events, events);
    }
    Py_CLEAR(events); /* as asyncio: breaks cycles when an exception occurs */
    if (r == NULL || queue_due_timers(loop, ready) < 0 || run_ready(ready) < 0) {
        Py_CLEAR(r);
        goto done;
    }
done:
    Py_XDECREF(events);
    Py_XDECREF(selector);
    Py_XDECREF(timeout);
    Py_XDECREF(ready);
    return r;
}

static PyMethodDef run_once_def = { "_run_once", run_once, METH_NOARGS,
                                    "ponte: one turn of asyncio's loop (BaseEventLoop._run_once), in C" };

/* ------------------------------------------------------------------------------------------------------------ */
/* Scheduling a callback: call_soon, _call_soon, call_soon_threadsafe */

/*
 * asyncio.Handle(callback, args, loop, context) as its __init__ builds it outside debug mode (the only mode these
 * run in): the same type and slots, without running __init__'s Python; with threadsafe, on 3.14 and later, an
 * events._ThreadSafeHandle, whose __init__ adds its lock. New ref, or NULL with an exception set.
 */
static PyObject *
handle_new(PyObject *loop, PyObject *callback, PyObject *args, PyObject *context, bool threadsafe)
{
    PyTypeObject *type = (PyTypeObject *)(threadsafe && aio.threadsafe_type ? aio.threadsafe_type : aio.handle_type);
    PyObject *h = type->tp_new(type, aio.empty, NULL), *ctx = NULL, *lock = NULL;

    if (h == NULL) {
        return NULL;
    }
    ctx = context == NULL || context == Py_None ? PyContext_CopyCurrent() : Py_NewRef(context);
    if (ctx == NULL || PyObject_SetAttr(h, aio.s_context, ctx) < 0 || PyObject_SetAttr(h, aio.s_loop, loop) < 0
        || PyObject_SetAttr(h, aio.s_callback, callback) < 0 || PyObject_SetAttr(h, aio.s_args, args) < 0
        || PyObject_SetAttr(h, aio.s_cancelled, Py_False) < 0 || PyObject_SetAttr(h, aio.s_repr, Py_None) < 0
        || PyObject_SetAttr(h, aio.s_source_traceback, Py_None) < 0
        || (type == (PyTypeObject *)aio.threadsafe_type
            && ((lock = PyObject_CallNoArgs(aio.rlock)) == NULL || PyObject_SetAttr(h, aio.s_lock, lock) < 0))) {
        Py_CLEAR(h);
    }
    Py_XDECREF(lock);
    Py_XDECREF(ctx);
    return h;
}

/* The handle, queued on loop._ready. New ref, or NULL with an exception set. */
static PyObject *
queue_handle(PyObject *loop, PyObject *callback, PyObject *args, PyObject *context, bool threadsafe)
{
    PyObject *h = handle_new(loop, callback, args, context, threadsafe), *ready = NULL, *ok = NULL;

    if (h != NULL && (ready = PyObject_GetAttr(loop, aio.s_ready)) != NULL) {
        ok = PyObject_CallMethodOneArg(ready, aio.s_append, h);
    }
    Py_XDECREF(ready);
    if (ok == NULL) {
        Py_CLEAR(h);
    }
    Py_XDECREF(ok);
    return h;
}

/* type(loop).name(loop, *args, **kw): asyncio's own method, for debug mode and for calls these do not take. */
PyObject *
pt_asgi_loop_class_call(PyObject *loop, PyObject *name, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    Py_ssize_t n = nargs + (kwnames ? PyTuple_GET_SIZE(kwnames) : 0);
    PyObject *func = PyObject_GetAttr((PyObject *)Py_TYPE(loop), name), *r = NULL;
    PyObject **stack = PyMem_Malloc((size_t)(n + 1) * sizeof(*stack));

    if (func != NULL && stack != NULL) {
        stack[0] = loop;
        memcpy(stack + 1, args, (size_t)n * sizeof(*stack));
        r = PyObject_Vectorcall(func, stack, (size_t)nargs + 1, kwnames);
    } else if (stack == NULL) {
        PyErr_NoMemory();
    }
    PyMem_Free(stack);
    Py_XDECREF(func);
    return r;
}

/*
 * call_soon(callback, *args, context=None) and call_soon_threadsafe(...): what asyncio does outside debug mode.
 * 1 when done (*handle set, a new ref), 0 when asyncio's own method must take the call, -1 on error.
 */
static int
schedule(PyObject *loop, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames, bool threadsafe, PyObject **handle)
{
    PyObject *context = NULL, *cbargs;
    Py_ssize_t i;
    int debug, closed;

    if (nargs < 1 || (kwnames != NULL && !pt_asgi_kw_is_context(kwnames))) {
        return 0; /* asyncio's says what is wrong with the call */
    }
    if (kwnames != NULL) {
        context = args[nargs];
    }
    if ((debug = attr_true(loop, aio.s_debug)) != 0) {
        return debug < 0 ? -1 : 0;
    }
    if ((closed = attr_true(loop, aio.s_closed)) != 0) {
        if (closed > 0) {
            PyErr_SetString(PyExc_RuntimeError, "Event loop is closed");
        }
        return -1;
    }
    if ((cbargs = PyTuple_New(nargs - 1)) == NULL) {
        return -1;
    }
    for (i = 1; i < nargs; i++) {
        PyTuple_SET_ITEM(cbargs, i - 1, Py_NewRef(args[i]));
    }
    *handle = queue_handle(loop, args[0], cbargs, context, threadsafe);
    Py_DECREF(cbargs);
    return *handle != NULL ? 1 : -1;
}

static PyObject *
call_soon(PyObject *loop, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    PyObject *h = NULL;
    int r;

    if (pt_asgi_task_capture(args, nargs, kwnames)) {
        Py_RETURN_NONE; /* a request's Task being built: its first step is taken at once (asgi_task.c) */
    }
    r = schedule(loop, args, nargs, kwnames, false, &h);

    return r > 0 ? h : r < 0 ? NULL : pt_asgi_loop_class_call(loop, aio.s_call_soon, args, nargs, kwnames);
}

/* From any thread, with the GIL: deque.append is atomic under it, as asyncio's relies on. */
static PyObject *
call_soon_threadsafe(PyObject *loop, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    PyObject *h = NULL, *ok;
    int r = schedule(loop, args, nargs, kwnames, true, &h);

    if (r <= 0) {
        return r < 0 ? NULL : pt_asgi_loop_class_call(loop, aio.s_call_soon_threadsafe, args, nargs, kwnames);
    }
    ok = PyObject_CallMethodNoArgs(loop, aio.s_write_to_self);
    if (ok == NULL) {
        Py_CLEAR(h);
    }
    Py_XDECREF(ok);
    return h;
}

/* _call_soon(callback, args, context): what call_soon (and up to 3.13 call_soon_threadsafe) queues handles with. */
static PyObject *
call_soon_internal(PyObject *loop, PyObject *const *args, Py_ssize_t nargs)
{
    int debug = nargs == 3 ? attr_true(loop, aio.s_debug) : 0;

    if (debug < 0) {
        return NULL;
    }
    if (nargs != 3 || debug) {
        return pt_asgi_loop_class_call(loop, aio.s_call_soon_internal, args, nargs, NULL);
    }
    return queue_handle(loop, args[0], args[1], args[2], false);
}

/* get_debug(): asked by every Future and Task the loop makes (a Python frame each, in asyncio). */
static PyObject *
get_debug(PyObject *loop, PyObject *unused)
{
    (void)unused;
    return PyObject_GetAttr(loop, aio.s_debug);
}

static PyMethodDef get_debug_def = { "get_debug", get_debug, METH_NOARGS, "ponte: asyncio's get_debug, in C" };
static PyMethodDef call_soon_def = { "call_soon", (PyCFunction)(void (*)(void))call_soon, METH_FASTCALL | METH_KEYWORDS,
                                     "ponte: asyncio's call_soon, in C" };
static PyMethodDef call_soon_threadsafe_def = { "call_soon_threadsafe",
                                                (PyCFunction)(void (*)(void))call_soon_threadsafe,
                                                METH_FASTCALL | METH_KEYWORDS,
                                                "ponte: asyncio's call_soon_threadsafe, in C" };
static PyMethodDef call_soon_internal_def = { "_call_soon", (PyCFunction)(void (*)(void))call_soon_internal,
                                              METH_FASTCALL, "ponte: asyncio's _call_soon, in C" };

bool
pt_asgi_loop_is_c_call_soon(PyObject *f)
{
    return PyCFunction_Check(f) && ((PyCFunctionObject *)f)->m_ml == &call_soon_def;
}

/* The limits asyncio's _run_once reads from its module. NULL, or what is missing. */
static const char *
read_constants(PyObject *base)
{
    PyObject *v = PyObject_GetAttrString(base, "_MIN_SCHEDULED_TIMER_HANDLES");

    aio.min_scheduled = v ? PyLong_AsSsize_t(v) : -1;
    Py_XDECREF(v);
    v = PyObject_GetAttrString(base, "_MIN_CANCELLED_TIMER_HANDLES_FRACTION");
    aio.min_cancelled = v ? PyFloat_AsDouble(v) : -1;
    Py_XDECREF(v);
    v = PyObject_GetAttrString(base, "MAXIMUM_SELECT_TIMEOUT");
    aio.max_timeout = v ? PyFloat_AsDouble(v) : -1;
    Py_XDECREF(v);
    if (PyErr_Occurred() || aio.min_scheduled < 0 || aio.min_cancelled < 0 || aio.max_timeout <= 0) {
        return "asyncio.base_events has not the constants of its _run_once";
    }
    return NULL;
}

/* 3.14's events._ThreadSafeHandle and the lock its __init__ gives it. NULL, or why they are not there. */
static const char *
look_up_threadsafe_handle(PyObject *events)
{
    PyObject *threading = PyImport_ImportModule("threading");

    aio.threadsafe_type = PyObject_GetAttrString(events, "_ThreadSafeHandle");
    aio.rlock = threading && aio.threadsafe_type ? PyObject_GetAttrString(threading, "RLock") : NULL;
    Py_XDECREF(threading);
    return aio.rlock && PyType_Check(aio.threadsafe_type) ? NULL
                                                          : "asyncio.events has no _ThreadSafeHandle, or no RLock";
}

/* What the C turn needs of asyncio, looked up once. NULL, or why it cannot run (an exception may be set). */
static const char *
look_up(PyObject *loop, PyObject *ns)
{
    static const char *attrs[] = {
        "_scheduled", "_timer_cancelled_count", "_ready", "_stopping", "_selector",     "_clock_resolution",
        "_debug",     "_process_events",        "time",   "_closed",   "_write_to_self"
    };
    static const char *methods[] = { "_run_once", "call_soon", "_call_soon", "call_soon_threadsafe", "get_debug" };
    PyObject *base = PyImport_ImportModule("asyncio.base_events");
    PyObject *events = base ? PyImport_ImportModule("asyncio.events") : NULL;
    PyObject *heapq = events ? PyImport_ImportModule("heapq") : NULL;
    PyObject *cls = NULL, *v;
    const char *why = NULL;
    size_t i;

    if ((Py_Version >> 16) < 0x030B || (Py_Version >> 16) > 0x030F) { /* the asyncio versions followed here */
        why = "it follows the _run_once of asyncio 3.11 to 3.15 only";
        goto done;
    }
    if (heapq == NULL) {
        why = "asyncio or heapq did not import";
        goto done;
    }
    if (THREADSAFE_HANDLE && (why = look_up_threadsafe_handle(events)) != NULL) {
        goto done;
    }
    cls = PyObject_GetAttrString(base, "BaseEventLoop");
    aio.python_run_once = cls ? PyObject_GetAttrString(cls, "_run_once") : NULL;
    aio.handle_type = PyObject_GetAttrString(events, "Handle");
    aio.timer_type = aio.handle_type ? PyObject_GetAttrString(events, "TimerHandle") : NULL;
    aio.heappop = PyObject_GetAttrString(heapq, "heappop");
    aio.heapify = PyObject_GetAttrString(heapq, "heapify");
    aio.callback_failed = PyDict_GetItemString(ns, "_callback_failed"); /* borrowed, then kept */
    Py_XINCREF(aio.callback_failed);
    aio.selector_type = PyDict_GetItemString(ns, "LibuvSelector"); /* borrowed, then kept */
    Py_XINCREF(aio.selector_type);
    aio.process_events_is_base = pt_asgi_same_method(loop, "asyncio.selector_events", "BaseSelectorEventLoop",
                                                     "_process_events");
    if (aio.python_run_once == NULL || aio.handle_type == NULL || aio.timer_type == NULL || aio.heappop == NULL
        || aio.heapify == NULL || aio.callback_failed == NULL || !PyType_Check(aio.handle_type)
        || !PyType_Check(aio.timer_type)) {
        why = "asyncio has no BaseEventLoop._run_once, Handle or TimerHandle";
        goto done;
    }
    for (i = 0; i < sizeof(methods) / sizeof(methods[0]); i++) {
        if (!pt_asgi_same_method(loop, "asyncio.base_events", "BaseEventLoop", methods[i])) {
            why = "the loop's class has a call_soon, call_soon_threadsafe, _run_once or get_debug of its own";
            goto done;
        }
    }
    for (i = 0; i < sizeof(attrs) / sizeof(attrs[0]); i++) {
        if (!PyObject_HasAttrString(loop, attrs[i])) {
            why = "the loop has no attribute the C turn uses";
            goto done;
        }
    }
    v = PyObject_GetAttrString(loop, "_ready");
    if (v == NULL || strcmp(Py_TYPE(v)->tp_name, "collections.deque") != 0) {
        why = "loop._ready is not a deque";
    }
    Py_XDECREF(v);
    v = why == NULL ? PyObject_GetAttrString(loop, "_scheduled") : NULL;
    if (why == NULL && (v == NULL || !PyList_Check(v))) {
        why = "loop._scheduled is not a list";
    }
    Py_XDECREF(v);
    if (why != NULL) {
        goto done;
    }
    why = read_constants(base);
done:
    PyErr_Clear();
    Py_XDECREF(cls);
    Py_XDECREF(heapq);
    Py_XDECREF(events);
    Py_XDECREF(base);
    return why;
}

static int
intern_names(void)
{
    struct {
        PyObject **slot;
        const char *name;
    } names[] = {
        { &aio.s_scheduled, "_scheduled" },
        { &aio.s_timer_cancelled_count, "_timer_cancelled_count" },
        { &aio.s_ready, "_ready" },
        { &aio.s_stopping, "_stopping" },
        { &aio.s_selector, "_selector" },
        { &aio.s_clock_resolution, "_clock_resolution" },
        { &aio.s_debug, "_debug" },
        { &aio.s_cancelled, "_cancelled" },
        { &aio.s_when, "_when" },
        { &aio.s_timer_scheduled, "_scheduled" },
        { &aio.s_context, "_context" },
        { &aio.s_callback, "_callback" },
        { &aio.s_args, "_args" },
        { &aio.s_run, "_run" },
        { &aio.s_select, "select" },
        { &aio.s_process_events, "_process_events" },
        { &aio.s_time, "time" },
        { &aio.s_popleft, "popleft" },
        { &aio.s_append, "append" },
        { &aio.s_closed, "_closed" },
        { &aio.s_loop, "_loop" },
        { &aio.s_repr, "_repr" },
        { &aio.s_source_traceback, "_source_traceback" },
        { &aio.s_call_soon, "call_soon" },
        { &aio.s_call_soon_threadsafe, "call_soon_threadsafe" },
        { &aio.s_call_soon_internal, "_call_soon" },
        { &aio.s_write_to_self, "_write_to_self" },
        { &aio.s_lock, "_lock" },
        { &aio.s_keys, "_keys" },
    };
    size_t i;

    for (i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
        if ((*names[i].slot = PyUnicode_InternFromString(names[i].name)) == NULL) {
            return -1;
        }
    }
    aio.empty = PyTuple_New(0);
    return aio.empty != NULL ? 0 : -1;
}

int
pt_asgi_loop_once_install(PyObject *loop, PyObject *ns)
{
    static PyMethodDef *defs[] = { &run_once_def, &call_soon_def, &call_soon_internal_def, &call_soon_threadsafe_def,
                                   &get_debug_def };
    static const char *why; /* looked up by the first loop: --loops' others are alike, and made one by one */
    static bool looked_up;
    const char *env = getenv("PONTE_ASGI_LOOP");
    PyObject *f;
    size_t i;

    if (env != NULL && strcmp(env, "python") == 0) {
        PT_ASGI_NOTE("ASGI: asyncio's loop turns and schedules in Python (PONTE_ASGI_LOOP=python)");
        return 0;
    }
    if (!looked_up) {
        looked_up = true;
        if (intern_names() < 0) {
            return -1;
        }
        if ((why = look_up(loop, ns)) != NULL) {
            pt_log_warning("ASGI: asyncio's loop turns and schedules in Python, not in C: %s", why);
        }
    }
    if (why != NULL) {
        return 0;
    }
    for (i = 0; i < sizeof(defs) / sizeof(defs[0]); i++) {
        f = PyCFunction_New(defs[i], loop);
        if (f == NULL || PyObject_SetAttrString(loop, defs[i]->ml_name, f) < 0) {
            Py_XDECREF(f);
            return -1;
        }
        Py_DECREF(f);
    }
    PT_ASGI_NOTE("ASGI: asyncio's loop turns and schedules in C (PONTE_ASGI_LOOP=python keeps asyncio's own)");
    return 0;
}
