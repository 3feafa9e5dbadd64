/*
 * ASGI 3.0 on an asyncio event loop driven by ponte's libuv loop, in the loop thread: what the files of ASGI share.
 *
 *   asgi.c         set-up, lifespan, and the server's events (queued without the GIL, handled with it)
 *   asgi_loop.c    the loop bridge: the _ponte module asyncio's LibuvSelector calls (asgi_selector.py)
 *   asgi_loop_once.c  asyncio's loop turn (_run_once) and call_soon, in C
 *   asgi_run.c     the awaitables: an already-complete one, and the wrapper that runs an app's coroutine in a Task
 *   asgi_task.c    the Task that runs the app's coroutine, its first step taken at once
 *   asgi_all_tasks.c  asyncio's set of live tasks (all_tasks()), its add in C
 *   asgi_scope.c   the connection scope of a request
 *   asgi_http.c    one HTTP request: receive() and send()
 *   asgi_ws.c      one WebSocket: receive() and send() over server/ws.h
 *
 * Everything here runs on the loop thread with the GIL held, unless it says otherwise. With --loops (server/loops.h)
 * there are several loop threads, each with its own asyncio loop: what belongs to one loop is thread-local
 * (pt_asgi_here, and each file's own), what they share is set up once and read-only afterwards (pt_asgi).
 */
#ifndef PT_ASGI_H
#define PT_ASGI_H

#include "gateway.h"

/* ---- asgi.c ---- */
/* The app and what every loop shares, set up once by pt_asgi_setup. */
typedef struct {
    PyObject *app;
    const pt_config_t *cfg;
    PyObject *task_type;           /* asyncio.Task, called directly unless the app set a task factory */
    PyObject *disconnect_event;    /* {"type": "http.disconnect"} */
    PyObject *client_disconnected; /* ponte.ClientDisconnected(OSError) */
    PyObject *state;               /* lifespan state, shallow-copied into each request scope, or NULL */
} pt_asgi_t;
extern pt_asgi_t pt_asgi;

/* The asyncio loop of the calling loop thread (--loops runs one per thread; set up by pt_asgi_setup on the main
 * thread, by the app's attach_loop on the others). The file-level state of the other asgi*.c files that belongs to
 * one loop is thread-local too. */
typedef struct {
    PyObject *loop;                                           /* the asyncio event loop */
    PyObject *create_task, *create_future, *get_task_factory; /* the loop's bound methods */
    PyObject *task_factory; /* loop.get_task_factory(), read once per batch of new requests */
    int index;              /* 1 for the main thread's loop, 2... for the others */
} pt_asgi_here_t;
extern _Thread_local pt_asgi_here_t pt_asgi_here;

/* Whether the server queued events (or the exit) while Python ran: asyncio's select must not block then. */
bool pt_asgi_events_pending(void);
/* Turns what the server reported during a libuv iteration into asyncio work (new tasks, resolved futures). */
void pt_asgi_handle_events(void);
/* The app lets go of req: pt_req_send with PT_SEND_DONE added to flags, once the events still queued for req are
 * dropped (the server may free the request at once: an HTTP/2 stream's goes with its stream). */
void pt_asgi_let_go(pt_request_t *req, pt_buf_t *out, unsigned flags);

/* A note at start-up on how the loops run, said by the main thread's loop only (the others are made alike). */
#define PT_ASGI_NOTE(...)              \
    do {                               \
        if (pt_asgi_here.index <= 1) { \
            pt_log_info(__VA_ARGS__);  \
        }                              \
    } while (0)

/* ---- asgi_loop.c ---- */
/* Creates the _ponte module, once. 0, or -1 with an exception set. */
int pt_asgi_loop_init(void);
/* The calling thread's bridge to `loop` (its select timer); detach releases it once the loop's handles are closed. 0,
 * or -1 with an exception set. */
int pt_asgi_loop_attach(uv_loop_t *loop);
void pt_asgi_loop_detach(void);
/* Whether the loop's class takes `method` from module.cls (asyncio's own, not an override). */
bool pt_asgi_same_method(PyObject *loop, const char *module, const char *cls, const char *method);
/* Makes the loop's call_soon_threadsafe wake-up keep the GIL (see asgi_loop.c), where the loop has the method. */
void pt_asgi_loop_wake_keeps_gil(PyObject *loop);
/* LibuvSelector.select(timeout) in C, given the selector's {fd: SelectorKey} (see asgi_loop.c). New ref or NULL. */
PyObject *pt_asgi_loop_select(PyObject *keys, PyObject *timeout);
/* Runs asyncio's run_forever until the server has closed everything (pt_app_t.run). */
int pt_asgi_loop_run(PyThreadState **main_ts);

/* ---- asgi_loop_once.c ---- */
/* Makes the loop's turn (_run_once), call_soon and get_debug C, where the loop is asyncio's own selector loop. 0,
 * or -1 with an exception set; ns is asgi_selector.py's namespace. */
int pt_asgi_loop_once_install(PyObject *loop, PyObject *ns);
/* Whether f is the C call_soon installed here. */
bool pt_asgi_loop_is_c_call_soon(PyObject *f);
/* type(loop).name(loop, *args, **kwargs), vectorcall-style: the loop's class method, past any instance attribute. */
PyObject *pt_asgi_loop_class_call(PyObject *loop, PyObject *name, PyObject *const *args, Py_ssize_t nargs,
                                  PyObject *kwnames);

/* ---- asgi_all_tasks.c ---- */
/* Makes asyncio's task set add in C (see asgi_all_tasks.c), where it is the stdlib's WeakSet. 0, or -1 with an
 * exception set. */
int pt_asgi_all_tasks_install(void);

/* ---- asgi_run.c ---- */
int pt_asgi_run_init(void);
/* An awaitable that is already complete: `await` returns value at once. Steals value (NULL passes through). */
PyObject *pt_asgi_ready(PyObject *value);
/*
 * The app's coroutine `coro` (stolen) wrapped for its Task and `owner`: the moment the coroutine ends, inside the
 * step that ended it, ended(owner, exc) is called (exc NULL when it returned); closed(owner) when the coroutine is
 * closed before it ended. New ref, or NULL with an exception set.
 */
typedef struct {
    void (*ended)(PyObject *owner, PyObject *exc);
    void (*closed)(PyObject *owner);
    /* Optional, with --gil-routes: after each step, before ended(), the GIL it held and waited for (ns). */
    void (*step_gil)(PyObject *owner, uint64_t hold, uint64_t wait);
    /* Optional, with the GIL sampler: the route the owner serves (pt_gil_route_index), asked once. */
    int (*route)(PyObject *owner);
} pt_asgi_run_hooks_t;
PyObject *pt_asgi_run_new(PyObject *coro, PyObject *owner, const pt_asgi_run_hooks_t *hooks);

/* ---- asgi_task.c ---- */
/* Whether a vectorcall's keyword names are exactly ('context',): asyncio's call_soon(callback, context=ctx). */
static inline bool
pt_asgi_kw_is_context(PyObject *kwnames)
{
    return kwnames != NULL && PyTuple_GET_SIZE(kwnames) == 1
        && PyUnicode_CompareWithASCIIString(PyTuple_GET_ITEM(kwnames, 0), "context") == 0;
}
/* Checks whether a Task's first step can be taken at once (see asgi_task.c), once the loop exists. */
int pt_asgi_task_init(void);
/* Releases what pt_asgi_task_init made for the calling loop thread (--loops, when its loop ends). */
void pt_asgi_task_fini(void);
/*
 * Starts a Task running `coro` (stolen) for `owner` (see pt_asgi_run_new): stores it in *slot, then takes its
 * first step at once, which may end the request and clear *slot. 0, or -1 with an exception set.
 */
int pt_asgi_task(PyObject *coro, PyObject *owner, const pt_asgi_run_hooks_t *hooks, PyObject **slot);
/* For the loop's call_soon(*args, **kwnames): whether it was a new Task's first step, kept to be taken at once
 * (then call_soon schedules nothing and returns None). */
bool pt_asgi_task_capture(PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames);
/* Resolves the future in *slot (and clears the slot) unless it is already done. Steals `value` when given. */
void pt_asgi_fut_resolve(PyObject **slot, PyObject *value, PyObject *exc);
bool pt_asgi_fut_done(PyObject *fut);

/* ---- asgi_scope.c ---- */
int pt_asgi_scope_init(const pt_config_t *cfg);
/* The scope of an HTTP request (type "http"). New ref. */
PyObject *pt_asgi_scope_http(const pt_request_t *req);
/* The scope of a WebSocket (type "websocket"): scheme ws/wss, subprotocols, the http.response extension. New ref. */
PyObject *pt_asgi_scope_ws(const pt_request_t *req);

/* ---- asgi_http.c ---- */
int pt_asgi_http_init(void);
/* The server's events for an HTTP request, in order: it starts, body bytes arrive, its output drained, the client
 * went away. */
void pt_asgi_http_start(pt_request_t *req);
void pt_asgi_http_body(pt_request_t *req);
void pt_asgi_http_drain(pt_request_t *req);
void pt_asgi_http_gone(pt_request_t *req);
/* Validates an event's headers into a list of (bytes, bytes) tuples. New ref, or NULL with an exception. */
PyObject *pt_asgi_check_headers(PyObject *headers);
/* The checked headers as spans into their bytes, in *spans (grown as needed, *cap long). Their count, or -1 with an
 * exception. */
Py_ssize_t pt_asgi_header_spans(PyObject *headers, pt_header_t **spans, size_t *cap);
/* Frames the head of a response of the app's (status, checked headers) into out, the header spans in *spans
 * (grown as needed, *cap long: a caller that answers many keeps them). 0, or -1 with an exception. */
int pt_asgi_write_head(pt_request_t *req, const pt_resp_ctx_t *rctx, int status, PyObject *headers,
                       int64_t known_length, pt_buf_t *out, pt_header_t **spans, size_t *cap);
/* The app's coroutine: app(scope, receive, send), or ASGI 2's app(scope)(receive, send). New ref. */
PyObject *pt_asgi_app_call(PyObject *scope, PyObject *receive, PyObject *send);

/* ---- asgi_ws.c ---- */
int pt_asgi_ws_init(void);
/* The server's events for a WebSocket: it opens, a message or the close came, its output drained, it is over. */
void pt_asgi_ws_start(pt_request_t *req);
void pt_asgi_ws_event(pt_request_t *req);
void pt_asgi_ws_drain(pt_request_t *req);
void pt_asgi_ws_gone(pt_request_t *req);

#endif
