/*
 * The asyncio.Task that runs an app's coroutine, with its first step taken at once ("eager"): a request whose app
 * answers without waiting (a hello, a cached page) is answered inside the loop turn that read it, with no Handle,
 * no ready-queue entry and no second turn.
 *
 * From Python 3.12 asyncio does this itself: Task(coro, loop=..., name=..., eager_start=True), public and documented,
 * takes the first step from the constructor when the loop is running (as it is whenever a request arrives), with
 * current_task() set; that is what runs there, and none of what follows.
 *
 * Python 3.11's Task schedules its first step from its constructor, with loop.call_soon(step, context=ctx). While
 * ponte builds a Task for a request, that one call is kept instead of scheduled: by the loop's call_soon itself
 * where it is ponte's C one (asgi_loop_once.c asks pt_asgi_task_capture), else by an instance attribute that
 * shadows the loop's call_soon for the while. The step then runs at once, in the Task's own context, as the loop
 * would have run it on its next turn. The Task is a real one, its step asyncio's own: current_task(), cancel(),
 * asyncio.timeout() and anyio's cancel scopes see nothing different, and once the app waits on something the Task
 * goes on as any other. No private asyncio name is used here. At start-up one Task is built this way and checked
 * (its step was kept, ran, and current_task() inside it was that Task); if anything differs (a loop without
 * instance attributes, a call_soon of its own), or with PONTE_ASGI_EAGER=off (on any version), Tasks are
 * scheduled as asyncio does it (the path before eager).
 */
#include "asgi.h"

#include <stdlib.h>
#include <string.h>

#include "../server/log.h"

/* The version whose asyncio takes a Task's first step itself (eager_start). */
#define ASYNCIO_EAGER_START (PY_VERSION_HEX >= 0x030C0000)

/* Each loop thread's (--loops): its loop's call_soon, and the Task it is building (on the heap: see asgi_loop.c's
 * bridge). */
typedef struct {
    bool by_asyncio;      /* eager_start=True does it (3.12+) */
    bool on;              /* 3.11: the start-up check passed */
    bool direct;          /* the loop's call_soon is ponte's C one, which asks pt_asgi_task_capture itself */
    bool armed;           /* a Task is being built: the first call_soon is its first step */
    PyObject *step;       /* what that call_soon was handed */
    PyObject *ctx;        /* and in which context */
    PyObject *name;       /* "call_soon" */
    PyObject *capture;    /* the callable shadowing loop.call_soon while a Task is built */
    PyObject *own;        /* the loop's call_soon as an instance attribute (asgi_loop_once.c), or NULL */
    PyObject *kw_context; /* ("context",) */
    PyObject *kw_task;    /* ("loop", "name"[, "eager_start"]): Task(coro, loop=..., name=...[, eager_start=True]) */
    uint64_t count;       /* Tasks named */
} eager_t;
static _Thread_local eager_t *eager;

/* loop.call_soon as it is when no Task is being built, for what capture() does not keep. New ref or NULL. */
static PyObject *
real_call_soon(PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    if (eager->own != NULL) {
        return PyObject_Vectorcall(eager->own, args, (size_t)nargs, kwnames);
    }
    return pt_asgi_loop_class_call(pt_asgi_here.loop, eager->name, args, nargs, kwnames);
}

bool
pt_asgi_task_capture(PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    if (eager->armed && eager->step == NULL && nargs == 1 && pt_asgi_kw_is_context(kwnames)
        && PyContext_CheckExact(args[1])) {
        eager->step = Py_NewRef(args[0]);
        eager->ctx = Py_NewRef(args[1]);
        return true;
    }
    return false;
}

/* Shadows loop.call_soon while a Task is built, where the loop's call_soon is not ponte's C one: keeps
 * call_soon(step, context=ctx), passes anything else on. */
static PyObject *
capture(PyObject *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    if (pt_asgi_task_capture(args, nargs, kwnames)) {
        Py_RETURN_NONE; /* Task.__init__ drops the Handle call_soon returns */
    }
    return real_call_soon(args, nargs, kwnames);
}

static PyMethodDef capture_def = { "call_soon", (PyCFunction)(void (*)(void))capture, METH_FASTCALL | METH_KEYWORDS,
                                   "ponte: keeps a new Task's first step to take it at once" };

/* "ponte-request-N": a Task named by asyncio's default ("Task-N") costs a PyUnicode_FromFormat per request, a
 * twentieth of an ASGI hello's instructions. New ref. */
static PyObject *
task_name(void)
{
    char buf[48] = "ponte-request-", digits[24];
    size_t len = strlen(buf), n = 0;
    uint64_t v = ++eager->count;

    do {
        digits[n++] = (char)('0' + v % 10);
        v /= 10;
    } while (v != 0);
    while (n > 0) {
        buf[len++] = digits[--n];
    }
    return PyUnicode_FromStringAndSize(buf, (Py_ssize_t)len);
}

/* asyncio.Task(coro, loop=loop, name=...), its first step kept in eager->step when eager-> New ref, or NULL with an
 * exception. */
static PyObject *
task_new(PyObject *coro)
{
    PyObject *name = task_name();
    PyObject *args[4] = { coro, pt_asgi_here.loop, name, Py_True };
    PyObject *task = NULL, *type, *value, *tb;

    if (eager->by_asyncio) {
        task = name ? PyObject_Vectorcall(pt_asgi.task_type, args, 1, eager->kw_task) : NULL;
        Py_XDECREF(name);
        return task;
    }
    if (name == NULL
        || (eager->on && !eager->direct && PyObject_SetAttr(pt_asgi_here.loop, eager->name, eager->capture) < 0)) {
        Py_XDECREF(name);
        return NULL;
    }
    eager->armed = eager->on;
    task = PyObject_Vectorcall(pt_asgi.task_type, args, 1, eager->kw_task);
    eager->armed = false;
    Py_DECREF(name);
    if (!eager->on) {
        return task;
    }
    if (!eager->direct) {
        PyErr_Fetch(&type, &value, &tb);
        if ((eager->own != NULL ? PyObject_SetAttr(pt_asgi_here.loop, eager->name, eager->own)
                                : PyObject_DelAttr(pt_asgi_here.loop, eager->name))
            < 0) {
            pt_py_log_exception("cannot give the asyncio loop its call_soon back", NULL);
        }
        PyErr_Restore(type, value, tb);
    }
    if (task == NULL) {
        Py_CLEAR(eager->step);
        Py_CLEAR(eager->ctx);
    }
    return task;
}

/* Takes the step task_new kept, in its context, or schedules it if its context cannot be entered. */
static void
first_step(void)
{
    PyObject *step = eager->step, *ctx = eager->ctx, *r;

    eager->step = eager->ctx = NULL;
    if (step == NULL) {
        return;
    }
    if (PyContext_Enter(ctx) == 0) {
        PyObject *type, *value, *tb;

        r = PyObject_CallNoArgs(step); /* the Task's own step: it catches what the app raises */
        PyErr_Fetch(&type, &value, &tb);
        if (PyContext_Exit(ctx) < 0) {
            pt_py_log_exception("cannot leave an ASGI task's context", NULL);
        }
        PyErr_Restore(type, value, tb);
    } else {
        PyObject *stack[2] = { step, ctx };

        PyErr_Clear();
        r = real_call_soon(stack, 1, eager->kw_context);
    }
    if (r == NULL) {
        pt_py_log_exception("error in the first step of an ASGI task", NULL); /* KeyboardInterrupt, SystemExit */
    }
    Py_XDECREF(r);
    Py_DECREF(step);
    Py_DECREF(ctx);
}

int
pt_asgi_task(PyObject *coro, PyObject *owner, const pt_asgi_run_hooks_t *hooks, PyObject **slot)
{
    PyObject *run = pt_asgi_run_new(coro, owner, hooks);

    if (run == NULL) {
        return -1;
    }
    *slot = pt_asgi_here.task_factory == Py_None ? task_new(run) : PyObject_CallOneArg(pt_asgi_here.create_task, run);
    Py_DECREF(run);
    if (*slot == NULL) {
        return -1;
    }
    first_step(); /* may end the request, and clear *slot with it */
    return 0;
}

/* ------------------------------------------------------------------------------------------------------------ */
/* The start-up check */

static const char probe_src[] = "import asyncio\n"
                                "async def probe(loop):\n"
                                "    return asyncio.current_task(loop)\n";

/* Builds one Task the eager way and says what differs from what eager needs, or NULL when nothing does. */
static const char *
eager_differs(void)
{
    PyObject *ns = PyDict_New(), *code = Py_CompileString(probe_src, "ponte/asgi_task.c", Py_file_input);
    PyObject *r = ns && code ? PyEval_EvalCode(code, ns, ns) : NULL;
    PyObject *probe = r ? PyDict_GetItemString(ns, "probe") : NULL; /* borrowed */
    PyObject *coro = probe ? PyObject_CallOneArg(probe, pt_asgi_here.loop) : NULL;
    PyObject *task = coro ? task_new(coro) : NULL, *done = NULL, *result = NULL, *dict = NULL;
    const char *why = NULL;
    bool kept = eager->step != NULL;

    if (task != NULL) {
        first_step();
        done = PyObject_CallMethod(task, "done", NULL);
        result = done == Py_True ? PyObject_CallMethod(task, "result", NULL) : NULL;
        dict = PyObject_GenericGetDict(pt_asgi_here.loop, NULL);
    }
    if (task == NULL) {
        why = "a Task could not be built with the loop's call_soon shadowed";
    } else if (!kept) {
        why = "asyncio.Task() did not call loop.call_soon(step, context=...)";
    } else if (done != Py_True) {
        why = "the Task's first step did not finish it";
    } else if (result != task) {
        why = "asyncio.current_task() inside the first step was not the Task";
    } else if (dict == NULL || PyDict_GetItemWithError(dict, eager->name) != eager->own) {
        why = "the loop's call_soon was not given back";
    }
    PyErr_Clear();
    Py_XDECREF(dict);
    Py_XDECREF(result);
    Py_XDECREF(done);
    Py_XDECREF(task);
    Py_XDECREF(coro);
    Py_XDECREF(r);
    Py_XDECREF(code);
    Py_XDECREF(ns);
    return why;
}

int
pt_asgi_task_init(void)
{
    const char *env = getenv("PONTE_ASGI_EAGER"), *why;
    bool off = env != NULL && strcmp(env, "off") == 0;

    eager = calloc(1, sizeof(*eager));
    if (eager == NULL) {
        PyErr_NoMemory();
        return -1;
    }

    eager->name = PyUnicode_InternFromString("call_soon");
    eager->capture = PyCFunction_New(&capture_def, NULL);
    eager->kw_context = Py_BuildValue("(s)", "context");
    eager->kw_task = Py_BuildValue("(ss)", "loop", "name");
    if (eager->name == NULL || eager->capture == NULL || eager->kw_context == NULL || eager->kw_task == NULL) {
        return -1;
    }
    if (ASYNCIO_EAGER_START && !off) {
        Py_SETREF(eager->kw_task, Py_BuildValue("(sss)", "loop", "name", "eager_start"));
        eager->by_asyncio = eager->kw_task != NULL;
        PT_ASGI_NOTE("ASGI: a request's task takes its first step at once (eager, by asyncio's eager_start; "
                     "PONTE_ASGI_EAGER=off schedules it)");
        return eager->kw_task != NULL ? 0 : -1;
    }
    /* Held: while a Task is built, capture takes its place in the loop's dict. */
    PyObject *dict = PyObject_GenericGetDict(pt_asgi_here.loop, NULL);

    eager->own = dict != NULL ? Py_XNewRef(PyDict_GetItemWithError(dict, eager->name)) : NULL;
    eager->direct = eager->own != NULL && pt_asgi_loop_is_c_call_soon(eager->own);
    Py_XDECREF(dict);
    PyErr_Clear();
    if (off) {
        PT_ASGI_NOTE("ASGI: tasks start on the loop's next turn (PONTE_ASGI_EAGER=off)");
        return 0;
    }
    eager->on = true;
    why = eager_differs();
    eager->on = why == NULL;
    if (why != NULL) {
        pt_log_warning("ASGI: tasks start on the loop's next turn, not at once: %s", why);
    } else {
        PT_ASGI_NOTE("ASGI: a request's task takes its first step at once (eager; PONTE_ASGI_EAGER=off schedules it)");
    }
    return 0;
}

void
pt_asgi_task_fini(void)
{
    if (eager == NULL) {
        return;
    }
    Py_CLEAR(eager->step);
    Py_CLEAR(eager->ctx);
    Py_CLEAR(eager->name);
    Py_CLEAR(eager->capture);
    Py_CLEAR(eager->own);
    Py_CLEAR(eager->kw_context);
    Py_CLEAR(eager->kw_task);
    free(eager);
    eager = NULL;
}
