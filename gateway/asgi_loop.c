/*
 * The loop bridge: asyncio.SelectorEventLoop(LibuvSelector()) runs on the loop thread (asgi_selector.py). Whenever
 * asyncio would block it calls select(), which is run_once() here: drop the GIL, run one libuv iteration (HTTP
 * sockets, timers, and uv_poll handles for the descriptors asyncio watches), take the GIL back, then have asgi.c
 * turn what libuv reported into asyncio work (start a task per new request, resolve the futures of receive() and
 * send() calls that had to wait).
 */
#include "asgi.h"

#include <errno.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/timerfd.h>
#include <time.h>
#include <unistd.h>

#include "../server/log.h"

typedef struct {
    uv_poll_t h;
    int fd;
    int events; /* selectors.EVENT_READ | EVENT_WRITE */
} pt_poll_t;

/* A descriptor libuv found ready in this iteration, with selectors' mask. */
typedef struct {
    int fd, mask;
} pt_ready_fd_t;

/* The calling loop thread's bridge (--loops: one per thread), on the heap: the module python3 loads keeps its
 * thread-locals in glibc's small static TLS (gil.c's `self` is initial-exec), so only a pointer is thread-local. */
typedef struct {
    uv_loop_t *uvloop;
    uv_poll_t select_timer; /* a timerfd: asyncio's select timeout, to the microsecond */
    int select_tfd;
    bool select_armed;
    pt_poll_t **polls; /* by file descriptor */
    size_t npolls;
    pt_ready_fd_t *ready;
    size_t nready, readycap;
    bool serving; /* run_forever is serving requests (not the start-up lifespan) */
    bool stopped;
    uint64_t left_select; /* when libuv last returned: the loop's busy stretch (its lag) is measured from there */
    uv_async_t keepalive; /* keeps libuv running while asyncio alone has work (lifespan); closed at exit */
} bridge_t;
static _Thread_local bridge_t *bridge;

static void
on_poll(uv_poll_t *h, int status, int events)
{
    pt_poll_t *p = h->data;
    int mask = 0;
    size_t i;

    if (status < 0) {
        mask = p->events; /* let asyncio find the error on its next read or write */
    } else {
        mask = ((events & UV_READABLE) ? 1 : 0) | ((events & UV_WRITABLE) ? 2 : 0);
    }
    for (i = 0; i < bridge->nready; i++) {
        if (bridge->ready[i].fd == p->fd) {
            bridge->ready[i].mask |= mask;
            return;
        }
    }
    if (bridge->nready == bridge->readycap) {
        size_t cap = bridge->readycap ? bridge->readycap * 2 : 32;
        void *r = realloc(bridge->ready, cap * sizeof(*bridge->ready));

        if (r == NULL) {
            return; /* level-triggered: it is reported again next time */
        }
        bridge->ready = r;
        bridge->readycap = cap;
    }
    bridge->ready[bridge->nready].fd = p->fd;
    bridge->ready[bridge->nready].mask = mask;
    bridge->nready++;
}

static void
on_poll_close(uv_handle_t *h)
{
    pt_poll_t *p = h->data;

    /* Closed by poll_stop, or by the walk that ends the loop: then asyncio, closing its loop later, finds it gone. */
    if ((size_t)p->fd < bridge->npolls && bridge->polls[p->fd] == p) {
        bridge->polls[p->fd] = NULL;
    }
    free(p);
}

static PyObject *
mod_poll_start(PyObject *mod, PyObject *args)
{
    int fd, events, r;
    pt_poll_t *p;

    if (!PyArg_ParseTuple(args, "ii:poll_start", &fd, &events)) {
        return NULL;
    }
    if ((size_t)fd >= bridge->npolls) {
        size_t n = (size_t)fd + 64;
        pt_poll_t **np = realloc(bridge->polls, n * sizeof(*np));

        if (np == NULL) {
            return PyErr_NoMemory();
        }
        memset(np + bridge->npolls, 0, (n - bridge->npolls) * sizeof(*np));
        bridge->polls = np;
        bridge->npolls = n;
    }
    p = bridge->polls[fd];
    if (p == NULL) {
        p = calloc(1, sizeof(*p));
        if (p == NULL) {
            return PyErr_NoMemory();
        }
        r = uv_poll_init(bridge->uvloop, &p->h, fd);
        if (r < 0) {
            free(p);
            PyErr_Format(PyExc_OSError, "cannot watch fd %d: %s", fd, uv_strerror(r));
            return NULL;
        }
        p->h.data = p;
        p->fd = fd;
        /* asyncio's descriptors alone must not keep libuv running once the server has stopped. */
        uv_unref((uv_handle_t *)&p->h);
        bridge->polls[fd] = p;
    }
    p->events = events;
    r = uv_poll_start(&p->h, ((events & 1) ? UV_READABLE : 0) | ((events & 2) ? UV_WRITABLE : 0), on_poll);
    if (r < 0) {
        PyErr_Format(PyExc_OSError, "cannot watch fd %d: %s", fd, uv_strerror(r));
        return NULL;
    }
    Py_RETURN_NONE;
}

static PyObject *
mod_poll_stop(PyObject *mod, PyObject *arg)
{
    int fd = PyLong_AsInt(arg);
    size_t i;

    if (fd == -1 && PyErr_Occurred()) {
        return NULL;
    }
    if (fd >= 0 && (size_t)fd < bridge->npolls && bridge->polls[fd] != NULL) {
        pt_poll_t *p = bridge->polls[fd];

        bridge->polls[fd] = NULL;
        if (!uv_is_closing((uv_handle_t *)&p->h)) {
            uv_close((uv_handle_t *)&p->h, on_poll_close);
        }
        for (i = 0; i < bridge->nready; i++) {
            if (bridge->ready[i].fd == fd) {
                bridge->ready[i] = bridge->ready[--bridge->nready];
                break;
            }
        }
    }
    Py_RETURN_NONE;
}

/*
 * asyncio's select timeout, on a timerfd rather than a libuv timer. libuv counts whole milliseconds, so a 10 ms
 * asyncio.sleep woke 0 to 2 ms late, and every sleeper due within that window woke in one batch: with 64 clients
 * sleeping 10 ms each, that lateness was a fifth of the throughput. The timerfd fires at the microsecond asyncio
 * asked for, so each sleeper wakes on its own turn.
 *
 * The timer may fall due at the top of the very libuv iteration it was meant to bound; uv_stop then makes that
 * iteration's poll non-blocking, where a do-nothing callback would let the poll sleep until the next unrelated
 * timer (the log flush, up to a second).
 */
static void
on_select_timer(uv_poll_t *p, int status, int events)
{
    uint64_t expirations;

    (void)status;
    (void)events;
    while (read(bridge->select_tfd, &expirations, sizeof expirations) < 0 && errno == EINTR) {
    }
    if (bridge->select_armed) {
        bridge->select_armed = false;
        uv_stop(p->loop);
    }
}

/* Arm the timerfd for `timeout` seconds from now (absolute, so time spent until the poll does not add up). */
static void
select_timer_arm(double timeout)
{
    struct itimerspec its = { { 0, 0 }, { 0, 0 } };
    struct timespec now;
    long long ns;

    clock_gettime(CLOCK_MONOTONIC, &now); /* asyncio's loop.time() is this clock too */
    ns = (long long)now.tv_nsec + (long long)(timeout * 1e9);
    its.it_value.tv_sec = now.tv_sec + (time_t)(ns / 1000000000LL);
    its.it_value.tv_nsec = (long)(ns % 1000000000LL);
    if (timerfd_settime(bridge->select_tfd, TFD_TIMER_ABSTIME, &its, NULL) == 0) {
        bridge->select_armed = true;
    }
}

static void
select_timer_disarm(void)
{
    struct itimerspec off = { { 0, 0 }, { 0, 0 } };

    if (bridge->select_armed && timerfd_settime(bridge->select_tfd, 0, &off, NULL) == 0) {
        bridge->select_armed = false;
    }
}

/* call_soon_threadsafe's wake-up, coalesced (see write_to_self), one per loop: the loop whose _write_to_self is
 * ponte's, its self-pipe socket as last seen (kept, so that its address cannot be reused) and that socket's
 * descriptor, and whether a byte is on its way since the loop last went to poll. Any thread may call write_to_self,
 * which finds its loop's wake_t in the capsule it is bound to. They take turns on the socket and descriptor by a
 * critical section on the loop (free-threaded CPython; the GIL otherwise); `pending` is an atomic, which the loop
 * thread clears before it looks for callbacks queued (poll_once). */
typedef struct {
    PyObject *loop, *csock;
    int fd;
    bool pending;
    bool coalesce; /* the loop has asyncio's queue of ready callbacks, which poll_once reads */
} wake_t;

static PyObject *ready_name;       /* "_ready" */
static _Thread_local wake_t *wake; /* the calling loop thread's */

/* Whether asyncio has callbacks ready that the loop has not run yet (loop._ready). */
static bool
wake_ready_waiting(void)
{
    PyObject *ready;
    Py_ssize_t n;

    if (wake == NULL || !wake->coalesce) {
        return false;
    }
    ready = PyObject_GetAttr(wake->loop, ready_name);
    n = ready != NULL ? PyObject_Length(ready) : -1;
    Py_XDECREF(ready);
    if (n < 0) {
        PyErr_Clear();
        return true; /* cannot tell: do not block */
    }
    return n > 0;
}

/*
 * asyncio's select(timeout): one libuv iteration, with the GIL released, for at most `timeout` seconds (None:
 * until something happens). Leaves the descriptors asyncio watches that libuv found ready in bridge->ready. 0, or -1
 * with an exception set.
 */
static int
poll_once(PyObject *arg)
{
    double timeout = -1;
    PyThreadState *ts;
    int alive;

    if (arg != Py_None) {
        timeout = PyFloat_AsDouble(arg);
        if (timeout == -1 && PyErr_Occurred()) {
            return -1;
        }
        if (timeout < 0) {
            timeout = 0;
        }
    }
    /* From here a call_soon_threadsafe must send its byte to wake the poll: either it queued its callback before
     * the loop looks (wake_ready_waiting sees it), or it sees `pending` clear and sends. */
    if (wake != NULL) {
        __atomic_store_n(&wake->pending, false, __ATOMIC_SEQ_CST);
    }
    if (pt_asgi_events_pending() || wake_ready_waiting()) {
        timeout = 0; /* work queued while Python ran: do not block before handling it */
    }
    if (bridge->left_select != 0) {
        pt_gil_loop_busy(pt_gil_now()
                         - bridge->left_select); /* how long Python ran since: events, first steps, callbacks */
    }
    bridge->nready = 0;
    if (timeout > 0) {
        select_timer_arm(timeout);
    } else if (timeout < 0) {
        select_timer_disarm(); /* no asyncio timer left: a stale deadline would only wake the loop for nothing */
    }
    ts = pt_gil_release();
    alive = uv_run(bridge->uvloop, timeout == 0 ? UV_RUN_NOWAIT : UV_RUN_ONCE);
    pt_gil_acquire(ts);
    bridge->left_select = pt_gil_now();
    pt_asgi_handle_events(); /* new requests take their first step here (asgi_task.c) */
    if (!alive && bridge->serving && !bridge->stopped) {
        /* The server has shut down (every handle closed): end asyncio's run_forever too. */
        PyObject *r = PyObject_CallMethod(pt_asgi_here.loop, "stop", NULL);

        Py_XDECREF(r);
        bridge->stopped = true;
    }
    return 0;
}

/* _ponte.run_once(timeout) -> [(fd, events)], for LibuvSelector.select. */
static PyObject *
mod_run_once(PyObject *mod, PyObject *arg)
{
    PyObject *list;
    size_t i;

    if (poll_once(arg) < 0 || (list = PyList_New((Py_ssize_t)bridge->nready)) == NULL) {
        return NULL;
    }
    for (i = 0; i < bridge->nready; i++) {
        PyObject *t = Py_BuildValue("(ii)", bridge->ready[i].fd, bridge->ready[i].mask);

        if (t == NULL) {
            Py_DECREF(list);
            return NULL;
        }
        PyList_SET_ITEM(list, (Py_ssize_t)i, t);
    }
    return list;
}

/*
 * LibuvSelector.select(timeout) without its Python: [(key, events)] for each ready descriptor registered in `keys`
 * (the selector's {fd: SelectorKey}), events being what libuv saw of what the key asks for. New ref, or NULL.
 */
PyObject *
pt_asgi_loop_select(PyObject *keys, PyObject *timeout)
{
    PyObject *list, *fd = NULL, *key, *pair;
    size_t i;
    long want;

    if (poll_once(timeout) < 0 || (list = PyList_New(0)) == NULL) {
        return NULL;
    }
    for (i = 0; i < bridge->nready; i++) {
        if ((fd = PyLong_FromLong(bridge->ready[i].fd)) == NULL) {
            goto error;
        }
        key = PyDict_GetItemWithError(keys, fd); /* borrowed */
        Py_CLEAR(fd);
        if (key == NULL) {
            if (PyErr_Occurred()) {
                goto error;
            }
            continue;
        }
        if (!PyTuple_Check(key) || PyTuple_GET_SIZE(key) < 3) {
            PyErr_SetString(PyExc_TypeError, "a selector key is not a SelectorKey");
            goto error;
        }
        want = PyLong_AsLong(PyTuple_GET_ITEM(key, 2)); /* key.events */
        if (want == -1 && PyErr_Occurred()) {
            goto error;
        }
        if ((want &= bridge->ready[i].mask) == 0) {
            continue;
        }
        pair = Py_BuildValue("(Ol)", key, want);
        if (pair == NULL || PyList_Append(list, pair) < 0) {
            Py_XDECREF(pair);
            goto error;
        }
        Py_DECREF(pair);
    }
    return list;
error:
    Py_DECREF(list);
    return NULL;
}

static PyObject *
mod_log(PyObject *mod, PyObject *args)
{
    int level;
    const char *msg;

    if (!PyArg_ParseTuple(args, "is:log", &level, &msg)) {
        return NULL;
    }
    if (level < PT_LOG_DEBUG || level > PT_LOG_CRITICAL) {
        level = PT_LOG_INFO;
    }
    pt_log((pt_log_level_t)level, "%s", msg);
    Py_RETURN_NONE;
}

/*
 * loop._write_to_self, which call_soon_threadsafe calls to wake the loop: the same byte on the same self-pipe
 * socket as asyncio's own, but sent without letting go of the GIL. asyncio's socket.send releases the GIL for the
 * syscall, and the loop thread, woken by that very byte, then contends for it with the thread that sent it:
 * Django over ASGI, whose asgiref executor wakes the loop about 11 times per request, made 13,171 futex calls in
 * 2 s under wrk -c16 before and 4,453 after (uvicorn on uvloop: about 4,100). A send that would block is dropped,
 * as asyncio's is: a byte is already waiting.
 *
 * And only one byte per poll, as uv_async_send coalesces: once a byte is on its way the loop will wake for it, and
 * before it next blocks run_once sees every callback queued meanwhile (wake_ready_waiting, after it has cleared
 * `pending`).
 */
static PyObject *
write_to_self(PyObject *capsule, PyObject *unused)
{
    wake_t *w = PyCapsule_GetPointer(capsule, NULL);
    PyObject *csock, *loop;

    if (w == NULL) {
        return NULL;
    }
    loop = w->loop;
    /* The first caller since the loop last looked claims the byte, then sends it (the loop wakes whenever it comes);
     * the others' callbacks, queued before they find it claimed, are there when the loop next looks. */
    if (w->coalesce && __atomic_exchange_n(&w->pending, true, __ATOMIC_SEQ_CST)) {
        Py_RETURN_NONE;
    }
    csock = PyObject_GetAttrString(loop, "_csock");
    Py_BEGIN_CRITICAL_SECTION(loop);
    if (csock != NULL && csock != Py_None && csock != w->csock) {
        int fd = PyObject_AsFileDescriptor(csock);

        Py_XSETREF(w->csock, Py_NewRef(csock));
        w->fd = fd;
    }
    if (csock != NULL && csock != Py_None && w->fd >= 0) {
        (void)send(w->fd, "", 1, MSG_DONTWAIT | MSG_NOSIGNAL); /* EAGAIN: a byte is waiting already */
    }
    Py_END_CRITICAL_SECTION();
    Py_XDECREF(csock);
    PyErr_Clear(); /* no self-pipe (closed, or not made yet): nothing to wake */
    Py_RETURN_NONE;
}

/*
 * loop._read_from_self, the reader of that socket: the same loop (read until it would block, hand what was read to
 * _process_self_data), keeping the GIL for a recv that never blocks, and without the BlockingIOError asyncio raises
 * and catches to end each wake-up. call_soon_threadsafe's bytes are zeros, which both of asyncio's
 * _process_self_data skip; only a signal number (add_signal_handler) is handed on, or everything where the loop's
 * class has a _process_self_data of its own.
 */
static _Thread_local struct {
    PyObject *ssock;
    int fd;
    bool all_bytes; /* hand zeros on too */
} self_reader;
static PyObject *process_name; /* "_process_self_data" */

static PyObject *
read_from_self(PyObject *loop, PyObject *unused)
{
    char buf[4096];
    ssize_t n;

    for (;;) {
        n = recv(self_reader.fd, buf, sizeof buf, MSG_DONTWAIT);
        if (n > 0) {
            ssize_t i = 0;

            while (!self_reader.all_bytes && i < n && buf[i] == 0) {
                i++;
            }
            if (i < n) {
                PyObject *data = PyBytes_FromStringAndSize(buf, n);
                PyObject *r = data ? PyObject_CallMethodOneArg(loop, process_name, data) : NULL;

                Py_XDECREF(data);
                if (r == NULL) {
                    return NULL;
                }
                Py_DECREF(r);
            }
        } else if (n == 0 || errno == EAGAIN || errno == EWOULDBLOCK) {
            break;
        } else if (errno != EINTR) {
            return PyErr_SetFromErrno(PyExc_OSError);
        }
    }
    Py_RETURN_NONE;
}

static PyMethodDef read_from_self_def = { "_read_from_self", read_from_self, METH_NOARGS,
                                          "ponte: read the loop's wake-up bytes keeping the GIL" };

bool
pt_asgi_same_method(PyObject *loop, const char *module, const char *cls, const char *method)
{
    PyObject *mod = PyImport_ImportModule(module);
    PyObject *c = mod ? PyObject_GetAttrString(mod, cls) : NULL;
    PyObject *theirs = c ? PyObject_GetAttrString(c, method) : NULL;
    PyObject *mine = theirs ? PyObject_GetAttrString((PyObject *)Py_TYPE(loop), method) : NULL;
    bool same = mine != NULL && mine == theirs;

    PyErr_Clear();
    Py_XDECREF(mine);
    Py_XDECREF(theirs);
    Py_XDECREF(c);
    Py_XDECREF(mod);
    return same;
}

/* Makes read_from_self the reader of the loop's self-pipe, where the loop has asyncio's. */
static void
read_keeps_gil(PyObject *loop)
{
    PyObject *ssock = NULL, *f = NULL, *r = NULL;

    if (!pt_asgi_same_method(loop, "asyncio.selector_events", "BaseSelectorEventLoop", "_read_from_self")
        || !PyObject_HasAttrString(loop, "_add_reader")) {
        PT_ASGI_NOTE("ASGI: the loop reads its wake-ups as asyncio does (no _read_from_self of asyncio's to replace)");
        return;
    }
    self_reader.all_bytes = !pt_asgi_same_method(loop, "asyncio.unix_events", "_UnixSelectorEventLoop",
                                                 "_process_self_data")
        && !pt_asgi_same_method(loop, "asyncio.selector_events", "BaseSelectorEventLoop", "_process_self_data");
    ssock = PyObject_GetAttrString(loop, "_ssock");
    self_reader.fd = ssock != NULL && ssock != Py_None ? PyObject_AsFileDescriptor(ssock) : -1;
    f = self_reader.fd >= 0 ? PyCFunction_New(&read_from_self_def, loop) : NULL;
    /* _add_reader on a descriptor already watched replaces its reader (and cancels the old one's handle). */
    r = f != NULL ? PyObject_CallMethod(loop, "_add_reader", "iO", self_reader.fd, f) : NULL;
    if (r != NULL) {
        self_reader.ssock = ssock; /* kept, so that its descriptor cannot be reused while it is watched */
        ssock = NULL;
    }
    if (r == NULL || PyObject_SetAttrString(loop, "_read_from_self", f) < 0) {
        pt_py_log_exception("cannot replace the loop's _read_from_self", NULL);
    }
    Py_XDECREF(ssock);
    Py_XDECREF(r);
    Py_XDECREF(f);
}

static PyMethodDef write_to_self_def = { "_write_to_self", write_to_self, METH_NOARGS,
                                         "ponte: wake the loop (call_soon_threadsafe) keeping the GIL" };

static void
wake_free(PyObject *capsule)
{
    wake_t *w = PyCapsule_GetPointer(capsule, NULL);

    if (w != NULL) {
        Py_XDECREF(w->csock);
        free(w);
    }
}

void
pt_asgi_loop_wake_keeps_gil(PyObject *loop)
{
    PyObject *f = NULL, *capsule = NULL;
    wake_t *w;

    /* A private method of asyncio's selector loops: only where this loop has both it and the self-pipe socket. */
    if (!PyObject_HasAttrString(loop, "_write_to_self") || !PyObject_HasAttrString(loop, "_csock")) {
        PT_ASGI_NOTE("ASGI: call_soon_threadsafe wakes the loop as asyncio does (no _write_to_self to replace)");
        return;
    }
    w = calloc(1, sizeof(*w));
    if (w != NULL) {
        /* borrowed: the capsule lives in the loop's dict, through f, and the loop outlives the server */
        w->loop = loop;
        w->fd = -1;
        /* Coalescing needs to see the loop's queue of ready callbacks (BaseEventLoop._ready); without it every call
         * sends its byte. */
        w->coalesce = PyObject_HasAttr(loop, ready_name);
        PyErr_Clear();
        capsule = PyCapsule_New(w, NULL, wake_free);
        if (capsule == NULL) {
            free(w);
        }
    }
    f = capsule != NULL ? PyCFunction_New(&write_to_self_def, capsule) : NULL;
    if (f == NULL || PyObject_SetAttrString(loop, "_write_to_self", f) < 0) {
        pt_py_log_exception("cannot replace the loop's _write_to_self", NULL);
    } else {
        wake = w; /* owned by the capsule */
    }
    Py_XDECREF(f);
    Py_XDECREF(capsule);
    read_keeps_gil(loop);
}

static PyMethodDef mod_methods[] = {
    { "log", mod_log, METH_VARARGS, "log(level, message): 0 debug, 1 info, 2 warning, 3 error" },
    { "poll_start", mod_poll_start, METH_VARARGS, "poll_start(fd, events): watch fd in libuv" },
    { "poll_stop", mod_poll_stop, METH_O, "poll_stop(fd)" },
    { "run_once", mod_run_once, METH_O, "run_once(timeout) -> [(fd, events)]: one libuv iteration" },
    { NULL, NULL, 0, NULL },
};

static struct PyModuleDef mod_def = {
    PyModuleDef_HEAD_INIT,
    "_ponte",
    "ponte's libuv loop, for asyncio's selector.",
    -1,
    mod_methods,
    NULL,
    NULL,
    NULL,
    NULL,
};

/* ------------------------------------------------------------------------------------------------------------ */
/* Start-up and the run hook */

int
pt_asgi_loop_attach(uv_loop_t *loop)
{
    bridge = calloc(1, sizeof(*bridge));
    if (bridge == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    bridge->uvloop = loop;
    bridge->select_tfd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
    if (bridge->select_tfd < 0 || uv_poll_init(loop, &bridge->select_timer, bridge->select_tfd) != 0) {
        PyErr_SetFromErrno(PyExc_OSError);
        return -1;
    }
    /* Always watched, but unreferenced: it must not keep uv_run alive once the server has closed everything. */
    uv_poll_start(&bridge->select_timer, UV_READABLE, on_select_timer);
    uv_unref((uv_handle_t *)&bridge->select_timer);
    uv_async_init(loop, &bridge->keepalive, NULL);
    return 0;
}

void
pt_asgi_loop_detach(void)
{
    if (bridge != NULL) {
        if (bridge->select_tfd >= 0) {
            close(bridge->select_tfd);
        }
        free(bridge->polls);
        free(bridge->ready);
        free(bridge);
        bridge = NULL;
    }
    Py_CLEAR(self_reader.ssock);
    wake = NULL;
}

int
pt_asgi_loop_init(void)
{
    PyObject *mod, *modules;

    ready_name = PyUnicode_InternFromString("_ready");
    process_name = PyUnicode_InternFromString("_process_self_data");
    if (ready_name == NULL || process_name == NULL) {
        return -1;
    }
    mod = pt_module_without_gil(PyModule_Create(&mod_def));
    modules = PyImport_GetModuleDict(); /* borrowed */
    if (mod == NULL || PyDict_SetItemString(modules, "_ponte", mod) < 0
        || PyModule_AddObjectRef(mod, "ClientDisconnected", pt_asgi.client_disconnected) < 0) {
        Py_XDECREF(mod);
        return -1;
    }
    Py_DECREF(mod);
    return 0;
}

int
pt_asgi_loop_run(PyThreadState **main_ts)
{
    PyObject *r;

    pt_gil_acquire(*main_ts);
    bridge->serving = true;
    r = PyObject_CallMethod(pt_asgi_here.loop, "run_forever", NULL);
    if (r == NULL) {
        pt_py_log_exception("the asyncio loop stopped with an error", NULL);
    }
    Py_XDECREF(r);
    *main_ts = pt_gil_release();
    /* Close callbacks of what the walk closed still have to run. */
    uv_run(bridge->uvloop, UV_RUN_NOWAIT);
    return 0;
}
