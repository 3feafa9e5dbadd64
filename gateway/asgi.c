/*
 * ASGI 3.0 (HTTP, spec 2.4) on an asyncio event loop driven by ponte's libuv loop, in the loop thread: set-up,
 * lifespan, and the server's events. See asgi.h for the other files.
 *
 * The server callbacks (on_request, on_body, on_drain, on_gone) run inside uv_run without the GIL, so they only
 * queue an event; Python is entered afterwards, from the loop bridge's run_once, with the GIL held.
 */
#include "asgi.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../server/log.h"
#include "asgi_lifespan.h"
#include "asgi_selector.h"

pt_asgi_t pt_asgi;
_Thread_local pt_asgi_here_t pt_asgi_here;

typedef enum {
    EV_START,
    EV_BODY,
    EV_DRAIN,
    EV_GONE,
} pt_event_kind_t;

typedef struct {
    pt_event_kind_t kind;
    pt_request_t *req;
    uint64_t seq; /* the request's number when queued: a stale event (request since reused) is dropped */
} pt_event_t;

/* Each loop's events and, on the main thread's, the exit, queued without the GIL (on the heap: see asgi_loop.c's
 * bridge). */
typedef struct {
    pt_event_t *events;
    size_t nevents, evcap;
    PyObject *lifespan; /* the Lifespan object, when the app takes part (the main thread's loop runs it) */
    bool exit_pending;
    void (*exit_done)(void *arg);
    void *exit_arg;
    PyThreadState **main_ts; /* the loop thread's state while it does not hold the GIL */
    PyThreadState *own_ts;   /* where main_ts points on a --loops thread */
} queued_t;
static _Thread_local queued_t *queued;

static PyObject *embedded_ns; /* asgi_selector.py and asgi_lifespan.py run: LibuvSelector, Lifespan */

static void start_exit(void);

/* ------------------------------------------------------------------------------------------------------------ */
/* Events from the server (queued without the GIL, handled in pt_asgi_handle_events with it) */

static void
queue_event(pt_event_kind_t kind, pt_request_t *req)
{
    if (queued->nevents == queued->evcap) {
        size_t cap = queued->evcap ? queued->evcap * 2 : 64;
        pt_event_t *e = realloc(queued->events, cap * sizeof(*e));

        if (e == NULL) {
            pt_log_error("out of memory queueing an ASGI event");
            abort();
        }
        queued->events = e;
        queued->evcap = cap;
    }
    queued->events[queued->nevents++] = (pt_event_t){ kind, req, req->seq };
}

void
pt_asgi_let_go(pt_request_t *req, pt_buf_t *out, unsigned flags)
{
    size_t i;

    /* Events still queued for it would name freed memory: an HTTP/2 stream's request goes with the stream. (An
     * HTTP/1.x request lives as long as its connection, and its seq tells a successor apart: no scan per request.) */
    for (i = 0; req->h2 != NULL && i < queued->nevents; i++) {
        if (queued->events[i].req == req) {
            queued->events[i].req = NULL;
        }
    }
    pt_req_send(req, out, flags | PT_SEND_DONE);
}

/* Handlers may queue more (a send failing closes a connection): the batch is walked by index. */
void
pt_asgi_handle_events(void)
{
    size_t i;

    for (i = 0; i < queued->nevents && queued->events[i].kind != EV_START; i++) {
    }
    if (i < queued->nevents) {
        PyObject *f = PyObject_CallNoArgs(pt_asgi_here.get_task_factory);

        Py_XSETREF(pt_asgi_here.task_factory, f != NULL ? f : Py_NewRef(Py_None));
        if (f == NULL) {
            pt_py_log_exception("cannot read the asyncio task factory", NULL);
        }
    }
    for (i = 0; i < queued->nevents; i++) {
        pt_event_t ev = queued->events[i];

        if (ev.req == NULL || ev.req->seq != ev.seq) {
            continue; /* the app let go of the request (pt_asgi_let_go), or its connection was reused since */
        }
        switch (ev.kind) {
        case EV_START: ev.req->websocket ? pt_asgi_ws_start(ev.req) : pt_asgi_http_start(ev.req); break;
        case EV_BODY: ev.req->websocket ? pt_asgi_ws_event(ev.req) : pt_asgi_http_body(ev.req); break;
        case EV_DRAIN: ev.req->websocket ? pt_asgi_ws_drain(ev.req) : pt_asgi_http_drain(ev.req); break;
        case EV_GONE: ev.req->websocket ? pt_asgi_ws_gone(ev.req) : pt_asgi_http_gone(ev.req); break;
        }
    }
    queued->nevents = 0;
    if (queued->exit_pending) {
        start_exit();
    }
}

bool
pt_asgi_events_pending(void)
{
    return queued->nevents > 0 || queued->exit_pending;
}

/* ------------------------------------------------------------------------------------------------------------ */
/* Lifespan and exit */

static PyObject *
exit_done(PyObject *self, PyObject *task)
{
    if (queued->exit_done != NULL) {
        void (*done)(void *) = queued->exit_done;

        queued->exit_done = NULL;
        done(queued->exit_arg);
    }
    Py_RETURN_NONE;
}

static PyMethodDef exit_done_def = { "_exit_done", exit_done, METH_O, "lifespan shutdown finished" };

/* Runs lifespan.shutdown, then lets the server end the loop. GIL held (from run_once). */
static void
start_exit(void)
{
    PyObject *coro = NULL, *task = NULL, *cb = NULL, *r = NULL;

    queued->exit_pending = false;
    if (queued->lifespan != NULL) {
        coro = PyObject_CallMethod(queued->lifespan, "shutdown", NULL);
        task = coro ? PyObject_CallOneArg(pt_asgi_here.create_task, coro) : NULL;
        cb = task ? PyCFunction_New(&exit_done_def, NULL) : NULL;
        r = cb ? PyObject_CallMethod(task, "add_done_callback", "O", cb) : NULL;
    }
    if (r == NULL) {
        if (PyErr_Occurred()) {
            pt_py_log_exception("cannot run the ASGI lifespan shutdown", NULL);
        }
        exit_done(NULL, NULL);
    }
    Py_XDECREF(r);
    Py_XDECREF(cb);
    Py_XDECREF(task);
    Py_XDECREF(coro);
}

static void
asgi_before_exit(pt_app_t *app, void (*done)(void *arg), void *arg)
{
    /* Called inside uv_run without the GIL: run_once starts the shutdown once it has the GIL back. */
    queued->exit_done = done;
    queued->exit_arg = arg;
    queued->exit_pending = true;
}

static void
asgi_on_request(pt_app_t *app, pt_request_t *req)
{
    queue_event(EV_START, req);
}

static void
asgi_on_body(pt_app_t *app, pt_request_t *req)
{
    queue_event(EV_BODY, req);
}

static void
asgi_on_drain(pt_app_t *app, pt_request_t *req)
{
    queue_event(EV_DRAIN, req);
}

static void
asgi_on_gone(pt_app_t *app, pt_request_t *req)
{
    queue_event(EV_GONE, req);
}

/* Runs lifespan.startup to its end before the server listens. Returns 0, or -1 after logging why not. */
static int
run_startup(PyObject *ns, const pt_config_t *cfg)
{
    PyObject *cls = PyDict_GetItemString(ns, "Lifespan"); /* borrowed */
    PyObject *ls, *coro, *ok;
    int r = -1;

    ls = cls ? PyObject_CallFunction(cls, "OsO", pt_asgi.app, cfg->lifespan == PT_LIFESPAN_ON ? "on" : "auto",
                                     cfg->interface == PT_IFACE_ASGI2 ? Py_True : Py_False)
             : NULL;
    coro = ls ? PyObject_CallMethod(ls, "startup", NULL) : NULL;
    ok = coro ? PyObject_CallMethod(pt_asgi_here.loop, "run_until_complete", "O", coro) : NULL;
    if (ok == NULL) {
        pt_py_log_exception("ASGI lifespan startup failed", NULL);
    } else if (PyObject_IsTrue(ok)) {
        PyObject *supported = PyObject_GetAttrString(ls, "supported");

        if (supported != NULL && PyObject_IsTrue(supported)) {
            queued->lifespan = Py_NewRef(ls);
            pt_asgi.state = PyObject_GetAttrString(ls, "state");
        }
        Py_XDECREF(supported);
        PyErr_Clear();
        r = 0;
    }
    Py_XDECREF(ok);
    Py_XDECREF(coro);
    Py_XDECREF(ls);
    return r;
}

static int
asgi_run(pt_app_t *app, uv_loop_t *loop)
{
    return pt_asgi_loop_run(queued->main_ts);
}

/* Runs Python source embedded in ponte (asgi_selector.py, asgi_lifespan.py) in the namespace `ns`. */
static int
exec_embedded(const char *src, const char *filename, PyObject *ns)
{
    PyObject *code = Py_CompileString(src, filename, Py_file_input);
    PyObject *r = code ? PyEval_EvalCode(code, ns, ns) : NULL;

    Py_XDECREF(code);
    Py_XDECREF(r);
    return r != NULL ? 0 : -1;
}

/* asyncio.SelectorEventLoop(LibuvSelector()), set as the thread's event loop, and what requests call of it. */
static int
create_loop(PyObject *ns)
{
    PyObject *selector_cls = PyDict_GetItemString(ns, "LibuvSelector"); /* borrowed */
    PyObject *selector = selector_cls ? PyObject_CallNoArgs(selector_cls) : NULL;
    PyObject *asyncio = selector ? PyImport_ImportModule("asyncio") : NULL;
    PyObject *r = NULL;

    pt_asgi_here.loop = asyncio ? PyObject_CallMethod(asyncio, "SelectorEventLoop", "O", selector) : NULL;
    r = pt_asgi_here.loop ? PyObject_CallMethod(asyncio, "set_event_loop", "O", pt_asgi_here.loop) : NULL;
    if (r != NULL) {
        pt_asgi_here.create_task = PyObject_GetAttrString(pt_asgi_here.loop, "create_task");
        pt_asgi_here.create_future = PyObject_GetAttrString(pt_asgi_here.loop, "create_future");
        pt_asgi_here.get_task_factory = PyObject_GetAttrString(pt_asgi_here.loop, "get_task_factory");
        pt_asgi.task_type = PyObject_GetAttrString(asyncio, "Task");
    }
    Py_XDECREF(r);
    Py_XDECREF(asyncio);
    Py_XDECREF(selector);
    if (!pt_asgi_here.create_task || !pt_asgi_here.create_future || !pt_asgi_here.get_task_factory
        || !pt_asgi.task_type) {
        return -1;
    }
    pt_asgi_loop_wake_keeps_gil(pt_asgi_here.loop);
    if (pt_asgi_loop_once_install(pt_asgi_here.loop, ns) < 0 || pt_asgi_all_tasks_install() < 0) {
        return -1;
    }
    return pt_asgi_task_init();
}

/* --loops: this thread's own asyncio loop on `loop`, made as the main thread's was (create_loop). */
static int
asgi_attach_loop(pt_app_t *app, uv_loop_t *loop, int index)
{
    char name[16];
    int r;

    snprintf(name, sizeof(name), "loop-%d", index);
    pt_gil_thread_name(name, "loop");
    queued = calloc(1, sizeof(*queued));
    if (queued == NULL || (queued->own_ts = PyThreadState_New(PyInterpreterState_Main())) == NULL) {
        pt_log_error("loop %d: out of memory", index);
        return -1;
    }
    queued->main_ts = &queued->own_ts;
    pt_gil_acquire(queued->own_ts);
    pt_asgi_here.index = index;
    r = pt_asgi_loop_attach(loop) < 0 || create_loop(embedded_ns) < 0 ? -1 : 0;
    if (r < 0) {
        pt_py_log_exception("cannot set up the asyncio loop of another loop thread", NULL);
    }
    queued->own_ts = pt_gil_release();
    return r; /* detach_loop releases what was made, once the loop's handles are closed */
}

/* After its loop has ended and its handles are closed: the asyncio loop closed (its descriptors are unwatched by
 * now), the thread's Python state gone. */
static void
asgi_detach_loop(pt_app_t *app, uv_loop_t *loop)
{
    PyObject *r = NULL;

    if (queued == NULL || queued->own_ts == NULL) {
        free(queued);
        queued = NULL;
        return;
    }
    pt_gil_acquire(queued->own_ts);
    if (pt_asgi_here.loop != NULL && (r = PyObject_CallMethod(pt_asgi_here.loop, "close", NULL)) == NULL) {
        pt_py_log_exception("cannot close the asyncio loop of another loop thread", NULL);
    }
    Py_XDECREF(r);
    pt_asgi_loop_detach();
    pt_asgi_task_fini();
    Py_CLEAR(pt_asgi_here.loop);
    Py_CLEAR(pt_asgi_here.create_task);
    Py_CLEAR(pt_asgi_here.create_future);
    Py_CLEAR(pt_asgi_here.get_task_factory);
    Py_CLEAR(pt_asgi_here.task_factory);
    free(queued->events);
    free(queued);
    queued = NULL;
    PyThreadState_Clear(PyThreadState_Get());
    PyThreadState_DeleteCurrent();
}

int
pt_asgi_setup(pt_app_t *base, PyObject *app, const pt_config_t *cfg, uv_loop_t *loop, PyThreadState **main_ts)
{
    PyObject *ns = NULL, *name = NULL;
    int r = -1;

    pt_asgi.app = Py_NewRef(app);
    pt_asgi.cfg = cfg;
    queued = calloc(1, sizeof(*queued)); /* the main thread's, kept to the end */
    if (queued == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    queued->main_ts = main_ts;
    pt_asgi.client_disconnected = PyErr_NewExceptionWithDoc(
        "ponte.ClientDisconnected", "send() after the client went away (an OSError).", PyExc_OSError, NULL);
    pt_asgi.disconnect_event = Py_BuildValue("{s:s}", "type", "http.disconnect");
    pt_asgi_here.index = 1;
    pt_gil_set_loops(cfg->loops);
    if (pt_asgi.client_disconnected == NULL || pt_asgi.disconnect_event == NULL || pt_asgi_run_init() < 0
        || pt_asgi_http_init() < 0 || pt_asgi_ws_init() < 0 || pt_asgi_scope_init(cfg) < 0 || pt_asgi_loop_init() < 0
        || pt_asgi_loop_attach(loop) < 0) {
        return -1;
    }
    ns = PyDict_New();
    name = PyUnicode_FromString("ponte.asgi_selector");
    if (ns == NULL || name == NULL || PyDict_SetItemString(ns, "__builtins__", PyEval_GetBuiltins()) < 0
        || PyDict_SetItemString(ns, "__name__", name) < 0
        || exec_embedded(asgi_selector_py, "ponte/asgi_selector.py", ns) < 0
        || exec_embedded(asgi_lifespan_py, "ponte/asgi_lifespan.py", ns) < 0 || create_loop(ns) < 0) {
        goto done;
    }
    embedded_ns = Py_NewRef(ns);
    if (cfg->lifespan != PT_LIFESPAN_OFF && run_startup(ns, cfg) < 0) {
        r = -2; /* already reported */
        goto done;
    }
    base->before_exit = asgi_before_exit;
    base->streams_body = true;
    base->on_loop = true;
    base->websockets = cfg->ws;
    base->on_request = asgi_on_request;
    base->on_body = asgi_on_body;
    base->on_drain = asgi_on_drain;
    base->on_gone = asgi_on_gone;
    base->run = asgi_run;
    base->attach_loop = asgi_attach_loop;
    base->detach_loop = asgi_detach_loop;
    r = 0;
done:
    Py_XDECREF(name);
    Py_XDECREF(ns);
    return r;
}
