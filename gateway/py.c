/*
 * The embedded interpreter: start it (as Debian's /usr/bin/python3, so sys.executable and sys.prefix are right),
 * import the app, decide its interface, and wire it to the server through pt_app_t.
 *
 * GIL: after start-up the loop thread drops the GIL. With worker threads it never takes it again (until shutdown).
 * With --threads 0 it takes it when a request needs the app and drops it before the loop blocks (a uv_prepare
 * handle), so threads the app starts still run while the server waits for the network.
 */
#include "gateway.h"

#include <limits.h>
#include <stdlib.h>
#include <string.h>

#include "../server/log.h"

typedef struct {
    pt_app_t base;
    const pt_config_t *cfg;
    PyObject *app;
    pt_wsgi_t *wsgi;
    pt_pool_t *pool;
    PyThreadState *main_ts;     /* the loop thread's state while it does not hold the GIL */
    bool loop_holds_gil;
    bool asgi;
    char description[64];
    uv_timer_t gil_report;
    uv_timer_t gil_trace;
    uv_prepare_t release_gil;
    uv_prepare_t wake_workers; /* wakes workers for the requests queued this loop turn, before libuv polls */
} pt_pyapp_t;

const char *
pt_app_runtime_version(void)
{
    static char v[64];

    snprintf(v, sizeof(v), "CPython %.*s", (int)strcspn(Py_GetVersion(), " "), Py_GetVersion());
    return v;
}

/* ------------------------------------------------------------------------------------------------------------ */
/* The loop thread and the GIL (--threads 0) */

static void
loop_take_gil(pt_pyapp_t *pa)
{
    if (!pa->loop_holds_gil) {
        pt_gil_acquire(pa->main_ts);
        pa->loop_holds_gil = true;
    }
}

static void
on_before_poll(uv_prepare_t *p)
{
    pt_pyapp_t *pa = p->data;

    if (pa->loop_holds_gil) {
        pa->main_ts = pt_gil_release();
        pa->loop_holds_gil = false;
    }
}

/* ------------------------------------------------------------------------------------------------------------ */
/* pt_app_t for WSGI */

static void
run_on_worker(void *arg, pt_request_t *req)
{
    pt_wsgi_handle(arg, req);
}

static void
on_wake_workers(uv_prepare_t *h)
{
    pt_pyapp_t *pa = h->data;

    uv_prepare_stop(h);
    if (pa->pool != NULL) {
        pt_pool_wake(pa->pool);
    }
}

static void
wsgi_on_request(pt_app_t *app, pt_request_t *req)
{
    pt_pyapp_t *pa = (pt_pyapp_t *)app;

    if (pa->pool != NULL) {
        pt_pool_submit(pa->pool, req);
        uv_prepare_start(&pa->wake_workers, on_wake_workers);
        return;
    }
    {
        uint64_t w0 = pt_gil_my_wait_ns();

        loop_take_gil(pa);
        req->gil_wait_start_ns = pt_gil_my_wait_ns() - w0;
    }
    pt_wsgi_handle(pa->wsgi, req);
}

static void
wsgi_on_drain(pt_app_t *app, pt_request_t *req)
{
    pt_pyapp_t *pa = (pt_pyapp_t *)app;

    loop_take_gil(pa);
    pt_wsgi_drain(pa->wsgi, req);
}

static void
wsgi_on_gone(pt_app_t *app, pt_request_t *req)
{
    pt_pyapp_t *pa = (pt_pyapp_t *)app;

    loop_take_gil(pa);
    pt_wsgi_gone(pa->wsgi, req);
}

static void
wsgi_stop(pt_app_t *app)
{
    pt_pyapp_t *pa = (pt_pyapp_t *)app;

    if (pa->loop_holds_gil) {
        pa->main_ts = pt_gil_release();
        pa->loop_holds_gil = false;
    }
    if (pa->pool != NULL) {
        pt_pool_stop(pa->pool);
        pa->pool = NULL;
    }
    if (pa->release_gil.loop != NULL && !uv_is_closing((uv_handle_t *)&pa->release_gil)) {
        uv_close((uv_handle_t *)&pa->release_gil, NULL);
    }
    if (pa->wake_workers.loop != NULL && !uv_is_closing((uv_handle_t *)&pa->wake_workers)) {
        uv_close((uv_handle_t *)&pa->wake_workers, NULL);
    }
}

/* ------------------------------------------------------------------------------------------------------------ */
/* Start-up */

static void
on_gil_report(uv_timer_t *t)
{
    pt_gil_report();    /* reads the statistics' atomics: no GIL needed */
}

static void
on_gil_trace_flush(uv_timer_t *t)
{
    pt_gil_trace_flush();
}

/* Reports start once the app is loaded, so that importing it does not count as the first interval. */
static void
start_gil_report(pt_pyapp_t *pa, uv_loop_t *loop)
{
    uint64_t ms = (uint64_t)(pa->cfg->gil_report * 1000);

    if (ms == 0) {
        return;
    }
    uv_timer_init(loop, &pa->gil_report);
    uv_timer_start(&pa->gil_report, on_gil_report, ms, ms);
    uv_unref((uv_handle_t *)&pa->gil_report);
    pt_gil_report();    /* the baseline */
}

static int
start_interpreter(const pt_config_t *cfg)
{
    PyConfig config;
    PyStatus st;

    PyConfig_InitPythonConfig(&config);
    /* Signals are the server's (libuv); Python must not turn SIGINT into KeyboardInterrupt in some app thread. */
    config.install_signal_handlers = 0;
    config.parse_argv = 0;
    st = PyConfig_SetBytesString(&config, &config.program_name, cfg->python_executable);
    if (!PyStatus_Exception(st)) {
        st = PyConfig_SetBytesString(&config, &config.executable, cfg->python_executable);
    }
    if (!PyStatus_Exception(st)) {
        char *argv[] = { (char *)"ponte", NULL };

        st = PyConfig_SetBytesArgv(&config, 1, argv);
    }
    if (!PyStatus_Exception(st)) {
        st = Py_InitializeFromConfig(&config);
    }
    PyConfig_Clear(&config);
    if (PyStatus_Exception(st)) {
        fprintf(stderr, "ponte: error: cannot start Python: %s%s%s\n", st.func ? st.func : "",
                st.func ? ": " : "", st.err_msg ? st.err_msg : "unknown error");
        return -1;
    }
    return 0;
}

/* --timeout: on SIGUSR2 (from the worker's own check, or from the master when its loop is blocked), every thread's
 * Python stack goes to stderr. faulthandler writes it from the signal handler without needing the GIL, which the
 * stuck thread may hold. */
static int
dump_stacks_on_sigusr2(void)
{
    PyObject *ns = pt_py_exec("import faulthandler, signal, sys\n"
                              "faulthandler.register(signal.SIGUSR2, file=sys.stderr, all_threads=True)\n");

    Py_XDECREF(ns);
    return ns ? 0 : -1;
}

PyObject *
pt_py_exec(const char *src)
{
    PyObject *ns = PyDict_New(), *r = NULL;

    if (ns != NULL && PyDict_SetItemString(ns, "__builtins__", PyEval_GetBuiltins()) == 0) {
        r = PyRun_String(src, Py_file_input, ns, ns);
    }
    if (r == NULL) {
        Py_XDECREF(ns);
        return NULL;
    }
    Py_DECREF(r);
    return ns;
}

static int
prepend_sys_path(const char *dir)
{
    char real[PATH_MAX];
    PyObject *path = PySys_GetObject("path");   /* borrowed */
    PyObject *s;
    int r;

    if (path == NULL || !PyList_Check(path)) {
        PyErr_SetString(PyExc_RuntimeError, "sys.path is not a list");
        return -1;
    }
    if (realpath(dir, real) == NULL) {
        PyErr_Format(PyExc_FileNotFoundError, "--app-dir %s: no such directory", dir);
        return -1;
    }
    s = PyUnicode_DecodeFSDefault(real);
    if (s == NULL) {
        return -1;
    }
    r = PyList_Insert(path, 0, s);
    Py_DECREF(s);
    return r;
}

/* Imports "path/to/file.py" as a module named after the file. New ref. */
static PyObject *
import_file(const char *path)
{
    PyObject *util = NULL, *spec = NULL, *mod = NULL, *loader = NULL, *r = NULL, *modules;
    char name[256];
    const char *base = strrchr(path, '/');
    size_t n;

    base = base ? base + 1 : path;
    n = strlen(base) - 3;
    if (n == 0 || n >= sizeof(name)) {
        PyErr_Format(PyExc_ValueError, "bad file name %s", path);
        return NULL;
    }
    memcpy(name, base, n);
    name[n] = '\0';
    util = PyImport_ImportModule("importlib.util");
    if (util == NULL) {
        goto done;
    }
    spec = PyObject_CallMethod(util, "spec_from_file_location", "ss", name, path);
    if (spec == NULL) {
        goto done;
    }
    if (spec == Py_None) {
        PyErr_Format(PyExc_ImportError, "cannot load %s", path);
        goto done;
    }
    mod = PyObject_CallMethod(util, "module_from_spec", "O", spec);
    if (mod == NULL) {
        goto done;
    }
    modules = PyImport_GetModuleDict();     /* borrowed */
    if (PyDict_SetItemString(modules, name, mod) < 0) {
        goto done;
    }
    loader = PyObject_GetAttrString(spec, "loader");
    if (loader == NULL) {
        goto done;
    }
    r = PyObject_CallMethod(loader, "exec_module", "O", mod);
    if (r == NULL) {
        PyDict_DelItemString(modules, name);
        goto done;
    }
    Py_DECREF(r);
    Py_DECREF(util);
    Py_DECREF(spec);
    Py_DECREF(loader);
    return mod;
done:
    Py_XDECREF(util);
    Py_XDECREF(spec);
    Py_XDECREF(mod);
    Py_XDECREF(loader);
    return NULL;
}

static void
startup_error(const char *fmt, const char *a, const char *b)
{
    fprintf(stderr, "ponte: error: ");
    fprintf(stderr, fmt, a, b);
    fputc('\n', stderr);
    if (PyErr_Occurred()) {
        pt_py_log_exception("traceback:", NULL);
    }
}

/* Finds the callable named by "module:attr" (attr may be dotted; without it, 'application' then 'app'). New ref. */
static PyObject *
load_app(const char *spec)
{
    char modname[1024];
    const char *colon = strrchr(spec, ':');
    const char *attr = colon ? colon + 1 : NULL;
    size_t mlen = colon ? (size_t)(colon - spec) : strlen(spec);
    PyObject *mod, *obj;

    if (mlen == 0 || mlen >= sizeof(modname) || (attr != NULL && *attr == '\0')) {
        fprintf(stderr, "ponte: error: APP must be module:callable or file.py:callable, got '%s'\n", spec);
        return NULL;
    }
    memcpy(modname, spec, mlen);
    modname[mlen] = '\0';
    if (mlen > 3 && strcmp(modname + mlen - 3, ".py") == 0) {
        mod = import_file(modname);
    } else {
        mod = PyImport_ImportModule(modname);
    }
    if (mod == NULL) {
        if (PyErr_ExceptionMatches(PyExc_ModuleNotFoundError) || PyErr_ExceptionMatches(PyExc_FileNotFoundError)) {
            startup_error("cannot import '%s': module not found%s", modname, "");
        } else {
            startup_error("cannot import '%s': it raised an exception%s", modname, "");
        }
        return NULL;
    }
    if (attr == NULL) {
        obj = PyObject_GetAttrString(mod, "application");
        if (obj == NULL) {
            PyErr_Clear();
            obj = PyObject_GetAttrString(mod, "app");
        }
        if (obj == NULL) {
            PyErr_Clear();
            Py_DECREF(mod);
            startup_error("module '%s' has no 'application' or 'app': name the callable as %s:NAME", modname,
                          modname);
            return NULL;
        }
    } else {
        char path[512];
        char *save = NULL, *part;

        snprintf(path, sizeof(path), "%s", attr);
        obj = mod;
        for (part = strtok_r(path, ".", &save); part != NULL; part = strtok_r(NULL, ".", &save)) {
            PyObject *next = PyObject_GetAttrString(obj, part);

            Py_DECREF(obj);
            if (next == NULL) {
                PyErr_Clear();
                startup_error("module '%s' has no attribute '%s'", modname, attr);
                return NULL;
            }
            obj = next;
        }
    }
    if (!PyCallable_Check(obj)) {
        startup_error("'%s' in '%s' is not callable", attr ? attr : "application", modname);
        Py_DECREF(obj);
        return NULL;
    }
    return obj;
}

/* ASGI apps are coroutine functions, or objects whose __call__ is one. Returns 1, 0, or -1 on error. */
static int
looks_like_asgi(PyObject *app)
{
    PyObject *inspect = PyImport_ImportModule("inspect");
    PyObject *r, *call;
    int yes;

    if (inspect == NULL) {
        return -1;
    }
    r = PyObject_CallMethod(inspect, "iscoroutinefunction", "O", app);
    yes = r != NULL && PyObject_IsTrue(r);
    Py_XDECREF(r);
    if (!yes && r != NULL && !PyFunction_Check(app) && !PyMethod_Check(app)) {
        call = PyObject_GetAttrString(app, "__call__");
        if (call != NULL) {
            r = PyObject_CallMethod(inspect, "iscoroutinefunction", "O", call);
            yes = r != NULL && PyObject_IsTrue(r);
            Py_XDECREF(r);
            Py_DECREF(call);
        } else {
            PyErr_Clear();
        }
    }
    Py_DECREF(inspect);
    if (PyErr_Occurred()) {
        return -1;
    }
    return yes;
}

int
pt_app_load(const pt_config_t *cfg, uv_loop_t *loop, pt_app_t **out)
{
    pt_pyapp_t *pa;
    int asgi;

    if (cfg->gil_trace != NULL) {
        int r = pt_gil_trace_open(cfg->gil_trace);

        if (r < 0) {
            fprintf(stderr, "ponte: error: --gil-trace %s: %s\n", cfg->gil_trace, strerror(-r));
            return -1;
        }
    }
    if (start_interpreter(cfg) < 0) {
        return -1;
    }
    pt_log_info("GIL probe: %s", pt_gil_start(cfg->gil_probe));
    if (pt_str_init() < 0 || prepend_sys_path(cfg->app_dir) < 0 || (cfg->gil_probe && pt_gil_name_python_threads() < 0)
        || (cfg->timeout > 0 && dump_stacks_on_sigusr2() < 0)) {
        startup_error("cannot prepare the interpreter%s%s", "", "");
        return -1;
    }
    pa = calloc(1, sizeof(*pa));
    if (pa == NULL) {
        return -1;
    }
    pa->cfg = cfg;
    if (cfg->gil_trace != NULL) {
        uv_timer_init(loop, &pa->gil_trace);
        uv_timer_start(&pa->gil_trace, on_gil_trace_flush, 250, 250);
        uv_unref((uv_handle_t *)&pa->gil_trace);
    }
    if (cfg->gil_monitor != NULL) {
        int r = pt_gil_monitor_start(cfg);

        if (r < 0) {
            fprintf(stderr, "ponte: error: --gil-monitor %s: %s\n", cfg->gil_monitor, uv_strerror(r));
            free(pa);
            return -1;
        }
    }
    pa->app = load_app(cfg->app);
    if (pa->app == NULL) {
        free(pa);
        return -1;
    }
    asgi = cfg->interface == PT_IFACE_ASGI || cfg->interface == PT_IFACE_ASGI2 ? 1
           : cfg->interface == PT_IFACE_WSGI ? 0 : looks_like_asgi(pa->app);
    if (asgi < 0) {
        startup_error("cannot inspect '%s'%s", cfg->app, "");
        Py_DECREF(pa->app);
        free(pa);
        return -1;
    }
    pa->asgi = asgi == 1;
    snprintf(pa->description, sizeof(pa->description),
             cfg->interface == PT_IFACE_ASGI2 ? "asgi2, asyncio on the loop thread"
             : pa->asgi ? "asgi, asyncio on the loop thread"
                                                      : cfg->threads ? "wsgi, %d worker threads" : "wsgi, on the loop thread",
             cfg->threads);
    pa->base.description = pa->description;
    pa->base.stop = wsgi_stop;
    pa->base.data = pa;
    if (pa->asgi) {
        int r = pt_asgi_setup(&pa->base, pa->app, cfg, loop, &pa->main_ts);

        if (r < 0) {
            if (r == -1) {
                startup_error("cannot set up the asyncio loop for '%s'%s", cfg->app, "");
            } else {
                fprintf(stderr, "ponte: error: the ASGI app '%s' failed to start (lifespan)\n", cfg->app);
            }
            Py_DECREF(pa->app);
            free(pa);
            return -1;
        }
        start_gil_report(pa, loop);
        pa->main_ts = pt_gil_release();
        *out = &pa->base;
        return 0;
    }
    if (pt_wsgi_init(&pa->wsgi, pa->app, cfg) < 0) {
        startup_error("cannot set up WSGI for '%s'%s", cfg->app, "");
        Py_DECREF(pa->app);
        free(pa);
        return -1;
    }
    pa->base.streams_body = cfg->threads > 0;
    pa->base.on_loop = cfg->threads == 0;
    pa->base.on_request = wsgi_on_request;
    pa->base.on_drain = wsgi_on_drain;
    pa->base.on_gone = wsgi_on_gone;

    uv_prepare_init(loop, &pa->wake_workers);
    pa->wake_workers.data = pa;
    uv_prepare_init(loop, &pa->release_gil);
    pa->release_gil.data = pa;
    uv_prepare_start(&pa->release_gil, on_before_poll);
    uv_unref((uv_handle_t *)&pa->release_gil);

    if (cfg->threads > 0) {
        int r = pt_pool_start(&pa->pool, cfg->threads, run_on_worker, pa->wsgi);

        if (r < 0) {
            fprintf(stderr, "ponte: error: cannot start %d worker threads: %s\n", cfg->threads, uv_strerror(r));
            return -1;
        }
    }
    start_gil_report(pa, loop);
    /* From here on the loop thread holds the GIL only while it runs the app itself (--threads 0). */
    pa->main_ts = pt_gil_release();
    *out = &pa->base;
    return 0;
}

void
pt_app_unload(pt_app_t *app)
{
    pt_pyapp_t *pa = (pt_pyapp_t *)app;

    pt_gil_trace_close();
    pt_gil_acquire(pa->main_ts);
    pa->loop_holds_gil = true;
    Py_CLEAR(pa->app);
    /* Runs atexit handlers and finalises modules, as `python app.py` would on exit. */
    if (Py_FinalizeEx() < 0) {
        pt_log_warning("errors while finalising Python");
    }
    free(pa);
}
