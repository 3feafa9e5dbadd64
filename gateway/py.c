/*
 * The embedded interpreter: start it (as Debian's /usr/bin/python3, or a venv's bin/python, so sys.executable and
 * sys.prefix are right), prepare it, import the app and tell its interface; and the one way gateway/ logs a Python
 * exception.
 */
#include "gateway.h"

#include <limits.h>
#include <stdlib.h>
#include <string.h>

#include "../server/log.h"

const char *
pt_app_runtime_version(void)
{
    static char v[PATH_MAX + 64];
#ifdef Py_GIL_DISABLED
    const char *build = "free-threaded";
#elif defined(Py_DEBUG)
    const char *build = "GIL, debug";
#else
    const char *build = "GIL";
#endif

    /* The version that runs (a patch release may differ from the headers'), how it was built, and the interpreter
     * ponte starts when no virtual environment is active. */
    snprintf(v, sizeof(v), "CPython %.*s (%s, %s)", (int)strcspn(Py_GetVersion(), " "), Py_GetVersion(), build,
             PT_PYTHON_EXECUTABLE);
    return v;
}

int
pt_py_start(const pt_config_t *cfg)
{
    PyConfig config;
    PyStatus st;
    char venv_python[PATH_MAX];
    const char *python;

    if (pt_py_hosted) {
        return 0; /* python3 started it, with this thread holding the GIL */
    }
    if (pt_venv_python(cfg, venv_python, sizeof(venv_python)) < 0) {
        return -1;
    }
    /* As the venv's bin/python: Python then finds the venv's pyvenv.cfg beside it (venv.c). */
    python = venv_python[0] != '\0' ? venv_python : cfg->python_executable;
    PyConfig_InitPythonConfig(&config);
    /* Signals are the server's (libuv); Python must not turn SIGINT into KeyboardInterrupt in some app thread. */
    config.install_signal_handlers = 0;
    config.parse_argv = 0;
    st = PyConfig_SetBytesString(&config, &config.program_name, python);
    if (!PyStatus_Exception(st)) {
        st = PyConfig_SetBytesString(&config, &config.executable, python);
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
        fprintf(stderr, "ponte: error: cannot start Python: %s%s%s\n", st.func ? st.func : "", st.func ? ": " : "",
                st.err_msg ? st.err_msg : "unknown error");
        return -1;
    }
    return 0;
}

const char *
pt_py_venv_note(void)
{
    static char note[PATH_MAX + 16];
    PyObject *prefix = PySys_GetObject("prefix"), *base = PySys_GetObject("base_prefix"); /* borrowed */
    const char *s;

    note[0] = '\0';
    if (prefix != NULL && base != NULL && PyUnicode_Check(prefix) && PyObject_RichCompareBool(prefix, base, Py_NE) == 1
        && (s = PyUnicode_AsUTF8(prefix)) != NULL) {
        snprintf(note, sizeof(note), ", venv %s", s);
    }
    PyErr_Clear();
    return note;
}

/* --timeout, and every worker of a master: on SIGUSR2 (from the worker's own check, or from the master when the
 * worker's loop is blocked or it outlives --graceful-timeout), every thread's Python stack goes to stderr.
 * faulthandler writes it from the signal handler without needing the GIL, which the stuck thread may hold. */
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
    PyObject *path = PySys_GetObject("path"); /* borrowed */
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

int
pt_py_prepare(const pt_config_t *cfg)
{
    if (pt_str_init() < 0 || prepend_sys_path(cfg->app_dir) < 0 || (cfg->gil_probe && pt_gil_name_python_threads() < 0)
        || ((cfg->timeout > 0 || cfg->worker_slot) && dump_stacks_on_sigusr2() < 0)) {
        pt_py_startup_error("cannot prepare the interpreter%s%s", "", "");
        return -1;
    }
    return 0;
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
    modules = PyImport_GetModuleDict(); /* borrowed */
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

void
pt_py_startup_error(const char *fmt, const char *a, const char *b)
{
    fprintf(stderr, "ponte: error: ");
    fprintf(stderr, fmt, a, b);
    fputc('\n', stderr);
    if (PyErr_Occurred()) {
        pt_py_log_exception("traceback:", NULL);
    }
}

/* Says why the app's module did not import, with the traceback. A module the app's own imports lack (flask, not
 * installed where this Python looks) is not the app missing: it is named, with where Python looked. */
static void
import_failed(const char *modname)
{
    PyObject *type, *value, *tb, *name = NULL, *prefix;
    const char *missing = NULL, *where = "?";
    size_t len = 0;

    if (!PyErr_ExceptionMatches(PyExc_ModuleNotFoundError)) {
        pt_py_startup_error(PyErr_ExceptionMatches(PyExc_FileNotFoundError)
                                ? "cannot import '%s': file not found%s"
                                : "cannot import '%s': it raised an exception%s",
                            modname, "");
        return;
    }
    PyErr_Fetch(&type, &value, &tb);
    PyErr_NormalizeException(&type, &value, &tb);
    name = value ? PyObject_GetAttrString(value, "name") : NULL;
    if (name != NULL && PyUnicode_Check(name) && (missing = PyUnicode_AsUTF8(name)) != NULL) {
        len = strlen(missing);
    }
    PyErr_Clear();
    prefix = PySys_GetObject("prefix"); /* borrowed */
    if (prefix != NULL && PyUnicode_Check(prefix) && (where = PyUnicode_AsUTF8(prefix)) == NULL) {
        PyErr_Clear();
        where = "?";
    }
    PyErr_Restore(type, value, tb);
    /* The app's module itself, or a package it lives in ("site" of "site.wsgi"): the app is not where looked. */
    if (missing == NULL || (strncmp(modname, missing, len) == 0 && (modname[len] == '\0' || modname[len] == '.'))) {
        pt_py_startup_error("cannot import '%s': module not found (check --app-dir and the module's name)%s", modname,
                            "");
    } else {
        char msg[1024];

        snprintf(msg, sizeof(msg),
                 "importing '%%s' failed: it imports '%s', which this Python (sys.prefix %s) does not have: install "
                 "it there, or serve from the virtual environment that has it (--virtualenv, or activate it)%%s",
                 missing, where);
        pt_py_startup_error(msg, modname, "");
    }
    Py_XDECREF(name);
}

/* Finds the callable named by "module:attr" (attr may be dotted; without it, 'application' then 'app'). New ref. */
PyObject *
pt_py_load_app(const char *spec)
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
        import_failed(modname);
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
            pt_py_startup_error("module '%s' has no 'application' or 'app': name the callable as %s:NAME", modname,
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
                pt_py_startup_error("module '%s' has no attribute '%s'", modname, attr);
                return NULL;
            }
            obj = next;
        }
    }
    if (!PyCallable_Check(obj)) {
        pt_py_startup_error("'%s' in '%s' is not callable", attr ? attr : "application", modname);
        Py_DECREF(obj);
        return NULL;
    }
    return obj;
}

/* ASGI apps are coroutine functions, or objects whose __call__ is one. Returns 1, 0, or -1 on error. */
int
pt_py_looks_like_asgi(PyObject *app)
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

void
pt_py_log_exception(const char *what, const pt_request_t *req)
{
    PyObject *type, *value, *tb;

    if (req != NULL) {
        pt_log_error("%s for \"%.*s %.*s HTTP/1.%d\" from %s:%d", what, (int)req->method.len, req->method.base,
                     (int)req->target.len, req->target.base, req->http_minor, req->remote_addr, req->remote_port);
    } else {
        pt_log_error("%s", what);
    }
    PyErr_Fetch(&type, &value, &tb);
    if (type == NULL) {
        return;
    }
    PyErr_NormalizeException(&type, &value, &tb);
    if (tb != NULL) {
        PyException_SetTraceback(value, tb);
    }
    PyErr_Display(type, value, tb);
    Py_XDECREF(type);
    Py_XDECREF(value);
    Py_XDECREF(tb);
}
